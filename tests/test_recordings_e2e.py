"""End to end: real RTMP pushes recorded to MP4 files, served under /vod."""

from __future__ import annotations

import asyncio
import struct
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from realcast_box.appkeys import RECORDINGS
from realcast_box.events import RECORDING_FAILED, RECORDING_READY, RECORDING_STARTED
from tests.box import (
    Box,
    decode_file,
    run_publisher,
    start_box,
    start_publisher,
)

pytestmark = pytest.mark.timeout(180)

SEGMENT_SECONDS = 2.0
PUSH_SECONDS = 6.0


async def create_recorded_stream(box: Box, *, app_recording: bool) -> dict:
    response = await box.client.post(
        "/api/apps",
        json={"name": "Recorded app", "settings": {"recording_enabled": app_recording}},
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    app_id = (await response.json())["id"]
    response = await box.client.post(
        "/api/streams", json={"app_id": app_id, "title": "Show"}, headers=box.auth
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def list_recordings(box: Box, stream_id: str) -> list[dict]:
    response = await box.client.get(
        f"/api/recordings/?stream_id={stream_id}", headers=box.auth
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def wait_for_recording(
    box: Box, stream_id: str, statuses: tuple[str, ...], timeout: float = 60.0
) -> dict:
    """Poll until the stream's newest recording is in one of ``statuses``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        recordings = await list_recordings(box, stream_id)
        if recordings and recordings[0]["status"] in statuses:
            return recordings[0]
        if loop.time() > deadline:
            raise AssertionError(f"recordings stayed {recordings}")
        await asyncio.sleep(0.1)


async def wait_for_segments(box: Box, stream_id: str, count: int) -> None:
    """Poll until the stream's source rendition has written ``count`` segments."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        publication = box.hub.publication(stream_id)
        if publication is not None and publication.segmenter.segment_count >= count:
            return
        if loop.time() > deadline:
            raise AssertionError(f"stream {stream_id} wrote fewer than {count}")
        await asyncio.sleep(0.05)


async def download(box: Box, url: str, target: Path, **kwargs) -> Path:
    response = await box.client.get(url, **kwargs)
    assert response.status == 200, await response.text()
    target.write_bytes(await response.read())
    return target


def top_level_boxes(path: Path) -> list[bytes]:
    data = path.read_bytes()
    types, position = [], 0
    while position + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        types.append(kind)
        position += size
    return types


def vod_path(recording: dict) -> str:
    return f"/vod/{recording['id']}.mp4"


async def test_recordings_auto_record_push(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    events = []

    async def collect(event):
        events.append(event)

    box.app[RECORDINGS]._events.subscribe(
        collect, types=(RECORDING_STARTED, RECORDING_READY, RECORDING_FAILED)
    )
    stream = await create_recorded_stream(box, app_recording=True)
    code, output = await run_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", str(PUSH_SECONDS)
    )
    assert code == 0, output
    recording = await wait_for_recording(box, stream["id"], ("completed", "failed"))

    assert recording["status"] == "completed", recording
    assert recording["source"] == "live"
    assert recording["title"] == "Show"
    assert abs(recording["duration"] - PUSH_SECONDS) <= SEGMENT_SECONDS
    assert recording["cdn_url"].endswith(vod_path(recording))
    path = await download(box, vod_path(recording), tmp_path / "vod.mp4")
    assert path.stat().st_size == recording["file_size"]
    boxes = top_level_boxes(path)
    assert boxes.index(b"moov") < boxes.index(b"mdat"), boxes
    decoded = decode_file(path)
    assert decoded.video_frames > 0
    assert decoded.audio_frames > 0
    assert abs(decoded.duration - PUSH_SECONDS) <= SEGMENT_SECONDS
    assert min(decoded.video_pts) < 0.1
    assert [event.type for event in events] == [RECORDING_STARTED, RECORDING_READY]
    assert events[1].data["recording_id"] == recording["id"]
    assert events[1].data["duration"] == recording["duration"]


async def test_recordings_start_stop_ranges(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await create_recorded_stream(box, app_recording=False)
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live")
        start = {"stream_id": stream["id"], "title": "Clip", "description": "Part"}
        response = await box.client.post(
            "/api/recordings/start", json=start, headers=box.auth
        )
        assert response.status == 201, await response.text()
        started = await response.json()
        assert started["status"] == "recording"
        assert started["cdn_url"] is None
        response = await box.client.post(
            "/api/recordings/start", json=start, headers=box.auth
        )
        assert response.status == 409, await response.text()

        first = box.hub.publication(stream["id"]).segmenter.segment_count
        await wait_for_segments(box, stream["id"], first + 3)
        response = await box.client.post(
            f"/api/recordings/stop/{stream['id']}", headers=box.auth
        )
        assert response.status == 200, await response.text()
        stopped = await response.json()
        response = await box.client.post(
            f"/api/recordings/stop/{stream['id']}", headers=box.auth
        )
        assert response.status == 404, await response.text()
    finally:
        publisher.kill()
        await publisher.wait()

    assert stopped["id"] == started["id"]
    assert stopped["status"] == "completed"
    assert stopped["title"] == "Clip"
    assert stopped["duration"] >= 2 * SEGMENT_SECONDS
    file = box.app[RECORDINGS].file_path(stopped["id"])
    assert stopped["file_size"] == file.stat().st_size
    data = file.read_bytes()
    size = len(data)
    url = vod_path(stopped)

    # A single range.
    response = await box.client.get(url, headers={"Range": "bytes=100-199"})
    assert response.status == 206
    assert await response.read() == data[100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{size}"
    # An open-ended range.
    response = await box.client.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert response.status == 206
    assert await response.read() == data[-10:]
    # A suffix range.
    response = await box.client.get(url, headers={"Range": "bytes=-50"})
    assert response.status == 206
    assert await response.read() == data[-50:]
    # Past the end.
    response = await box.client.get(url, headers={"Range": f"bytes={size}-"})
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"
    response = await box.client.get(url, headers={"Range": "bytes=-0"})
    assert response.status == 416
    # Several ranges get the whole file.
    response = await box.client.get(url, headers={"Range": "bytes=0-9,20-29"})
    assert response.status == 200
    assert await response.read() == data
    # If-Range with the current ETag applies the range, another ETag does not.
    response = await box.client.head(url)
    assert response.status == 200
    etag = response.headers["ETag"]
    assert response.headers["Accept-Ranges"] == "bytes"
    response = await box.client.get(
        url, headers={"Range": "bytes=0-9", "If-Range": etag}
    )
    assert response.status == 206
    assert await response.read() == data[:10]
    response = await box.client.get(
        url, headers={"Range": "bytes=0-9", "If-Range": '"stale-etag"'}
    )
    assert response.status == 200
    assert await response.read() == data
    # If-Range with a date before the last change gets the whole file.
    response = await box.client.get(
        url,
        headers={"Range": "bytes=0-9", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"},
    )
    assert response.status == 200
    assert len(await response.read()) == size

    response = await box.client.get(f"/vod/{stopped['id']}/thumbnail.jpg")
    assert response.status == 200
    assert response.content_type == "image/jpeg"
    assert (await response.read())[:2] == b"\xff\xd8"


async def test_recordings_disk_guard_keeps_stream_live(aiohttp_client, tmp_path):
    box = await start_box(
        aiohttp_client,
        tmp_path,
        reconnect_window_seconds=0,
        recordings_min_free_mb=1 << 30,
    )
    stream = await create_recorded_stream(box, app_recording=True)
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        recording = await wait_for_recording(box, stream["id"], ("failed",))
        status = await box.status(stream["id"])
        first = box.hub.publication(stream["id"]).segmenter.segment_count
        await wait_for_segments(box, stream["id"], first + 1)
    finally:
        publisher.kill()
        await publisher.wait()
    assert recording["failure_reason"] == "disk_full"
    assert recording["cdn_url"] is None
    assert status["status"] == "live"
    response = await box.client.get(vod_path(recording))
    assert response.status == 404


async def test_recordings_stream_setting_wins(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await create_recorded_stream(box, app_recording=True)
    response = await box.client.put(
        f"/api/streams/{stream['id']}",
        json={"settings": {"recording": False}},
        headers=box.auth,
    )
    assert response.status == 200, await response.text()
    code, output = await run_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "2"
    )
    assert code == 0, output
    assert await list_recordings(box, stream["id"]) == []


def make_hls_vod(folder: Path, seconds: float) -> None:
    """Write an HLS VOD of test video and a tone with the ffmpeg CLI."""
    folder.mkdir(parents=True)
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=320x240:rate=25:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_playlist_type",
        "vod",
        str(folder / "index.m3u8"),
    ]
    subprocess.run(command, check=True, timeout=60)


async def test_recordings_pull_allowed_host(aiohttp_client, aiohttp_server, tmp_path):
    make_hls_vod(tmp_path / "origin", 4)
    origin_app = web.Application()
    origin_app.router.add_static("/origin", tmp_path / "origin")
    origin = await aiohttp_server(origin_app, host="127.0.0.1")
    box = await start_box(
        aiohttp_client, tmp_path, recordings_pull_allow_list="127.0.0.1"
    )
    stream = await create_recorded_stream(box, app_recording=False)
    url = f"http://127.0.0.1:{origin.port}/origin/index.m3u8"
    response = await box.client.post(
        "/api/recordings/start",
        json={"stream_id": stream["id"], "stream_url": url, "app_id": stream["app_id"]},
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    started = await response.json()
    assert started["source"] == "pull"
    assert started["stream_url"] == url

    recording = await wait_for_recording(box, stream["id"], ("completed", "failed"))
    assert recording["status"] == "completed", recording
    assert abs(recording["duration"] - 4) <= SEGMENT_SECONDS
    path = await download(box, vod_path(recording), tmp_path / "pulled.mp4")
    decoded = decode_file(path)
    assert decoded.video_frames > 0
    assert decoded.audio_frames > 0


@pytest.mark.parametrize(
    ("stream_url", "message"),
    [
        ("rtmp://203.0.113.5/live/show", "not in the recordings_pull_allow_list"),
        ("http://localhost:1/other.m3u8", "not in the recordings_pull_allow_list"),
        ("ftp://127.0.0.1/file.mp4", "expected an rtmp, rtmps, http or https URL"),
        ("http://127.0.0.1:99999/x", "invalid URL"),
    ],
)
async def test_recordings_pull_rejected_url(
    aiohttp_client, tmp_path, stream_url, message
):
    box = await start_box(aiohttp_client, tmp_path, recordings_pull_allow_list="")
    stream = await create_recorded_stream(box, app_recording=False)
    response = await box.client.post(
        "/api/recordings/start",
        json={"stream_id": stream["id"], "stream_url": stream_url},
        headers=box.auth,
    )
    assert response.status == 400
    body = await response.json()
    assert message in body["detail"]
    assert await list_recordings(box, stream["id"]) == []


async def test_recordings_own_url_records_live(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await create_recorded_stream(box, app_recording=False)
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live")
        response = await box.client.post(
            "/api/recordings/start",
            json={
                "stream_id": stream["id"],
                "stream_url": f"rtmp://localhost/live/{stream['id']}",
            },
            headers=box.auth,
        )
        assert response.status == 201, await response.text()
        started = await response.json()
    finally:
        publisher.kill()
        await publisher.wait()
    assert started["source"] == "live"
    assert started["stream_url"] is None


async def test_recordings_vod_signed_stream_needs_token(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await create_recorded_stream(box, app_recording=True)
    response = await box.client.put(
        f"/api/streams/{stream['id']}",
        json={"settings": {"playback_policy": "signed"}},
        headers=box.auth,
    )
    assert response.status == 200, await response.text()
    code, output = await run_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "3"
    )
    assert code == 0, output
    recording = await wait_for_recording(box, stream["id"], ("completed",))
    response = await box.client.post(
        f"/api/streams/{stream['id']}/playback-token",
        json={"viewer_id": "viewer-1"},
        headers=box.auth,
    )
    assert response.status == 200, await response.text()
    token = (await response.json())["playback_token"]

    response = await box.client.get(vod_path(recording))
    assert response.status == 401
    response = await box.client.get(f"{vod_path(recording)}?token=not-a-token")
    assert response.status == 403
    response = await box.client.get(f"{vod_path(recording)}?token={token}")
    assert response.status == 200
    response = await box.client.get(
        vod_path(recording),
        headers={"Authorization": f"Bearer {token}", "Range": "bytes=0-7"},
    )
    assert response.status == 206
    assert len(await response.read()) == 8
    response = await box.client.get(f"/vod/{recording['id']}/thumbnail.jpg")
    assert response.status == 401


async def test_recordings_codec_change_starts_new_recording(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=2)
    stream = await create_recorded_stream(box, app_recording=True)
    url = box.rtmp_url(stream["stream_key"])
    code, output = await run_publisher(url, "--seconds", "3")
    assert code == 0, output
    # The same session goes on with another frame size: a new init segment.
    code, output = await run_publisher(
        url, "--seconds", "3", "--width", "640", "--height", "360"
    )
    assert code == 0, output
    await box.wait_for_status(stream["id"], "offline")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        recordings = await list_recordings(box, stream["id"])
        if len(recordings) == 2 and all(r["status"] == "completed" for r in recordings):
            break
        assert loop.time() < deadline, recordings
        await asyncio.sleep(0.1)

    sizes = []
    for recording in reversed(recordings):  # oldest first
        assert recording["title"] == "Show"
        path = await download(
            box, vod_path(recording), tmp_path / f"{recording['id']}.mp4"
        )
        decoded = decode_file(path)
        assert decoded.audio_frames > 0
        sizes.append((decoded.width, decoded.height))
    assert sizes == [(320, 240), (640, 360)]
