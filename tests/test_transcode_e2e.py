"""End to end: a stream with a transcoding profile gets an aligned HLS ladder."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import av
import pytest

from realcast_box.live import ladder as ladder_module
from realcast_box.media import transcode
from tests.box import Box, run_publisher, start_box, start_publisher

pytestmark = pytest.mark.timeout(240)

SEGMENT_SECONDS = 2.0
SOURCE = ("--width", "640", "--height", "360", "--fps", "25", "--gop", "50")


async def create_ladder_stream(box: Box, qualities: list[dict]) -> dict:
    stream = await box.create_stream()
    response = await box.client.post(
        "/api/transcoding-profiles",
        json={
            "app_id": stream["app_id"],
            "name": "Ladder",
            "qualities": qualities,
            "audio_bitrate": 64,
        },
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    profile = await response.json()
    response = await box.client.put(
        f"/api/streams/{stream['id']}",
        json={"settings": {"transcoding_profile_id": profile["id"]}},
        headers=box.auth,
    )
    assert response.status == 200, await response.text()
    return stream


TWO_RENDITIONS = [
    {"name": "360p", "width": 640, "height": 360, "bitrate": 600, "fps": 25},
    {"name": "180p", "width": 320, "height": 180, "bitrate": 200, "fps": 12.5},
    {"name": "720p", "width": 1280, "height": 720, "bitrate": 2500, "fps": 25},
    {"name": "fast", "width": 320, "height": 180, "bitrate": 300, "fps": 50},
]


async def get_text(box: Box, path: str) -> str:
    response = await box.client.get(path)
    assert response.status == 200, f"{path}: {response.status}"
    return await response.text()


def variants(multivariant: str) -> dict[str, str]:
    """Map each variant's URI to its EXT-X-STREAM-INF attributes."""
    lines = multivariant.splitlines()
    return {
        lines[i + 1]: line.split(":", 1)[1]
        for i, line in enumerate(lines)
        if line.startswith("#EXT-X-STREAM-INF:")
    }


async def fetch_segments(
    box: Box, stream_id: str, variant: str, folder: Path
) -> tuple[str, dict[int, Path]]:
    """Download one rendition: its playlist and each segment joined to its init."""
    base = f"/hls/{stream_id}/{variant.rsplit('/', 1)[0]}"
    playlist = await get_text(box, f"/hls/{stream_id}/{variant}")
    sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist).group(1))
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[int, Path] = {}
    init = b""
    gap = False
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            uri = re.search(r'URI="([^"]+)"', line).group(1)
            response = await box.client.get(f"{base}/{uri}")
            init = await response.read()
        elif line == "#EXT-X-GAP":
            gap = True
        elif line and not line.startswith("#"):
            if not gap:
                response = await box.client.get(f"{base}/{line}")
                assert response.status == 200
                path = folder / f"{sequence}.mp4"
                path.write_bytes(init + await response.read())
                files[sequence] = path
            gap = False
            sequence += 1
    return playlist, files


def first_video_pts(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        return min(float(f.pts * f.time_base) for f in frames)


def probe(path: Path) -> tuple[int, int, int, int]:
    """Return (width, height, video frames, audio frames) of a segment file."""
    width = height = video = audio = 0
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                video += 1
                width, height = frame.width, frame.height
            else:
                audio += 1
    return width, height, video, audio


@pytest.mark.parametrize("bframes", [0, 2])
async def test_transcode_ladder_aligns_renditions_with_the_source(
    aiohttp_client, tmp_path, bframes
):
    box = await start_box(aiohttp_client, tmp_path, hls_window=20)
    stream = await create_ladder_stream(box, TWO_RENDITIONS)
    stream_id = stream["id"]
    code, output = await run_publisher(
        box.rtmp_url(stream["stream_key"]),
        "--seconds",
        "9",
        "--bframes",
        str(bframes),
        *SOURCE,
        timeout=120,
    )
    assert code == 0, output
    status = await box.wait_for_status(stream_id, "offline", timeout=60)
    await box.hub._wait_for_ladder(stream_id)
    multivariant = await get_text(box, f"/hls/{stream_id}/index.m3u8")
    listed = variants(multivariant)
    assert len(listed) == 3, multivariant
    renditions = {uri.split("-")[0]: attrs for uri, attrs in listed.items()}
    assert set(renditions) == {"source", "360p", "180p"}
    for attrs in listed.values():
        for name in ("BANDWIDTH", "AVERAGE-BANDWIDTH", "RESOLUTION", "FRAME-RATE"):
            assert f"{name}=" in attrs, attrs
        assert 'CODECS="avc1.' in attrs
        assert "mp4a.40." in attrs
    assert "RESOLUTION=320x180" in renditions["180p"]
    assert "FRAME-RATE=12.500" in renditions["180p"]

    starts: dict[str, dict[int, float]] = {}
    for uri in listed:
        name = uri.split("-")[0]
        playlist, files = await fetch_segments(box, stream_id, uri, tmp_path / name)
        assert "#EXT-X-ENDLIST" in playlist
        assert len(files) >= 4, playlist
        expected = {"source": (640, 360), "360p": (640, 360), "180p": (320, 180)}
        for path in files.values():
            width, height, video, audio = probe(path)
            assert (width, height) == expected[name]
            assert video > 0
            assert audio > 0
        starts[name] = {seq: first_video_pts(path) for seq, path in files.items()}
    # Same sequence number, same start: within one source frame (40 ms).
    common = set(starts["source"]) & set(starts["360p"]) & set(starts["180p"])
    assert len(common) >= 4
    for sequence in common:
        source_start = starts["source"][sequence]
        for name in ("360p", "180p"):
            assert abs(starts[name][sequence] - source_start) <= 0.040, (
                name,
                sequence,
                starts,
            )
    assert status["renditions"] == [] or status["status"] == "offline"


async def test_transcode_status_reports_renditions_and_dropped_qualities(
    aiohttp_client, tmp_path
):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await create_ladder_stream(box, TWO_RENDITIONS)
    stream_id = stream["id"]
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime", *SOURCE
    )
    try:
        for _ in range(200):
            status = await box.status(stream_id)
            states = {r["name"]: r["state"] for r in status["renditions"]}
            if states.get("360p") == "active" and states.get("180p") == "active":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"renditions did not start: {status}")
        by_name = {r["name"]: r for r in status["renditions"]}
        assert [r["name"] for r in status["renditions"]] == [
            "360p",
            "180p",
            "720p",
            "fast",
        ]
        assert by_name["180p"]["encoder"] == "libx264"
        assert (by_name["180p"]["width"], by_name["180p"]["height"]) == (320, 180)
        assert by_name["180p"]["fps"] == 12.5
        assert by_name["720p"]["state"] == "dropped"
        assert "upscale" in by_name["720p"]["reason"]
        assert by_name["fast"]["state"] == "dropped"
        assert "frame rate" in by_name["fast"]["reason"]
        # The API responds while the encoders run.
        response = await box.client.get("/api/streams", headers=box.auth)
        assert response.status == 200
    finally:
        publisher.kill()
        await publisher.wait()


class FailingEncoder:
    """A hardware encoder stand-in: libx264 that fails after some frames.

    No GPU exists here, so the failure of one is simulated; the libx264
    fallback it triggers is real.
    """

    def __init__(self, context: av.CodecContext, fail_after: int) -> None:
        self._context = context
        self._left = fail_after
        self.extradata = context.extradata

    def encode(self, frame):
        self._left -= 1
        if self._left < 0:
            raise av.error.ExternalError(-542398533, "simulated GPU failure")
        return self._context.encode(frame)


async def test_transcode_hardware_failure_restarts_rendition_on_libx264(
    aiohttp_client, tmp_path, monkeypatch
):
    real_open = transcode.open_encoder

    def open_encoder(settings):
        if settings.name != "h264_nvenc":
            return real_open(settings)
        software = transcode.EncoderSettings(
            **{**vars(settings), "name": transcode.SOFTWARE_ENCODER}
        )
        context = real_open(software)
        # Only the 360p rendition's "GPU" fails; 180p stays on it.
        return FailingEncoder(
            context, fail_after=60 if settings.width == 640 else 10**6
        )

    async def choose(enable_gpu_acceleration):
        return "h264_nvenc" if enable_gpu_acceleration else None

    monkeypatch.setattr(transcode, "open_encoder", open_encoder)
    box = await start_box(aiohttp_client, tmp_path, hls_window=20)
    monkeypatch.setattr(box.hub, "_choose_encoder", choose)
    stream = await box.create_stream()
    response = await box.client.post(
        "/api/transcoding-profiles",
        json={
            "app_id": stream["app_id"],
            "name": "GPU",
            "qualities": TWO_RENDITIONS[:2],
            "enable_gpu_acceleration": True,
        },
        headers=box.auth,
    )
    profile = await response.json()
    await box.client.put(
        f"/api/streams/{stream['id']}",
        json={"settings": {"transcoding_profile_id": profile["id"]}},
        headers=box.auth,
    )
    stream_id = stream["id"]
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "14", "--realtime", *SOURCE
    )
    try:
        for _ in range(300):
            status = await box.status(stream_id)
            encoders = {r["name"]: r["encoder"] for r in status["renditions"]}
            states = {r["name"]: r["state"] for r in status["renditions"]}
            if encoders.get("360p") == "libx264" and states.get("360p") == "active":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no restart on libx264: {status}")
        reasons = {r["name"]: r["reason"] for r in status["renditions"]}
        assert "h264_nvenc failed" in reasons["360p"]
        assert encoders["180p"] == "h264_nvenc"
        assert await publisher.wait() == 0
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
    await box.wait_for_status(stream_id, "offline", timeout=60)
    await box.hub._wait_for_ladder(stream_id)

    listed = variants(await get_text(box, f"/hls/{stream_id}/index.m3u8"))
    discontinuities = {}
    for uri in listed:
        playlist, files = await fetch_segments(
            box, stream_id, uri, tmp_path / uri.split("/")[0]
        )
        sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist).group(1))
        marked = []
        for line in playlist.splitlines():
            if line == "#EXT-X-DISCONTINUITY":
                marked.append(sequence)
            elif line and not line.startswith("#"):
                sequence += 1
        discontinuities[uri.split("-")[0]] = marked
        for path in files.values():
            assert probe(path)[2] > 0
    # The restart is one discontinuity, at the same sequence number everywhere.
    assert len(discontinuities["source"]) == 1, discontinuities
    assert discontinuities["360p"] == discontinuities["source"]
    assert discontinuities["180p"] == discontinuities["source"]


async def test_transcode_sheds_the_most_expensive_rendition_when_behind(
    aiohttp_client, tmp_path, monkeypatch
):
    real_open = transcode.open_encoder

    class SlowEncoder:
        """libx264 slowed to below real time, as on an overloaded box."""

        def __init__(self, context):
            self._context = context
            self.extradata = context.extradata

        def encode(self, frame):
            if frame is not None:
                import time

                time.sleep(0.08)
            return self._context.encode(frame)

    def open_encoder(settings):
        context = real_open(settings)
        return SlowEncoder(context) if settings.width == 640 else context

    monkeypatch.setattr(transcode, "open_encoder", open_encoder)
    monkeypatch.setattr(ladder_module, "LAG_LIMIT_SECONDS", 1.0)
    monkeypatch.setattr(ladder_module, "SHED_AFTER_SECONDS", 1.0)
    box = await start_box(aiohttp_client, tmp_path)
    stream = await create_ladder_stream(box, TWO_RENDITIONS[:2])
    stream_id = stream["id"]
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime", *SOURCE
    )
    try:
        for _ in range(300):
            status = await box.status(stream_id)
            states = {r["name"]: r["state"] for r in status["renditions"]}
            if states.get("360p") == "shed":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"nothing was shed: {status}")
        assert states["180p"] in ("active", "starting")
        reasons = {r["name"]: r["reason"] for r in status["renditions"]}
        assert "could not transcode in real time" in reasons["360p"]
        path = f"/hls/{stream_id}/index.m3u8"
        for _ in range(100):
            response = await box.client.get(path)
            if response.status == 200:
                break
            await asyncio.sleep(0.1)
        multivariant = await get_text(box, path)
        assert "360p-" not in multivariant
        assert "source-" in multivariant
        assert "180p-" in multivariant
    finally:
        publisher.kill()
        await publisher.wait()


async def test_transcode_audio_only_source_gets_no_renditions(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await create_ladder_stream(box, TWO_RENDITIONS[:2])
    stream_id = stream["id"]
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]),
        "--seconds",
        "20",
        "--realtime",
        "--no-video",
    )
    try:
        for _ in range(150):
            status = await box.status(stream_id)
            states = {r["name"]: r["state"] for r in status["renditions"]}
            if states and set(states.values()) == {"dropped"}:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"qualities not dropped: {status}")
        reasons = {r["reason"] for r in status["renditions"]}
        assert reasons == {"the source has no video"}
        multivariant = await get_text(box, f"/hls/{stream_id}/index.m3u8")
        assert list(variants(multivariant)) == [
            uri for uri in variants(multivariant) if uri.startswith("source-")
        ]
        assert len(variants(multivariant)) == 1
    finally:
        publisher.kill()
        await publisher.wait()
