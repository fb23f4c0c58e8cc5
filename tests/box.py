"""Helpers for end-to-end tests: a real box in-process, real publishers outside.

The box runs in the test's event loop (HTTP through pytest-aiohttp's test
server, RTMP on an ephemeral loopback port). Publishers run as child
processes so that FFmpeg's blocking network calls never stall the server.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from realcast_box.api.ratelimit import RATE_LIMITER, RateLimiter
from realcast_box.app import RTMP_SERVER, create_app
from realcast_box.appkeys import HUB
from realcast_box.config import load_config
from realcast_box.hls.front import FrontSite
from realcast_box.live.hub import Hub

TESTS_DIR = Path(__file__).parent
PUBLISHER = TESTS_DIR / "publisher.py"
# download_hls waits this long at most for the first whole segment.
SEGMENT_WAIT_SECONDS = 30.0


@dataclass
class Box:
    client: TestClient
    app: web.Application
    data_dir: Path
    token: str

    @property
    def rtmp_port(self) -> int:
        return self.app[RTMP_SERVER].sockets[0].getsockname()[1]

    @property
    def hub(self) -> Hub:
        return self.app[HUB]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def rtmp_url(self, stream_key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{stream_key}"

    async def create_stream(self, title: str = "Test stream") -> dict:
        response = await self.client.post(
            "/api/apps", json={"name": "Test app"}, headers=self.auth
        )
        assert response.status == 201, await response.text()
        app_id = (await response.json())["id"]
        response = await self.client.post(
            "/api/streams", json={"app_id": app_id, "title": title}, headers=self.auth
        )
        assert response.status == 201, await response.text()
        return await response.json()

    async def status(self, stream_id: str) -> dict:
        response = await self.client.get(
            f"/api/streams/{stream_id}/status", headers=self.auth
        )
        assert response.status == 200, await response.text()
        return await response.json()

    async def wait_for_status(
        self, stream_id: str, status: str, timeout: float = 20.0
    ) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            current = await self.status(stream_id)
            if current["status"] == status:
                return current
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"status stayed {current} instead of {status}")
            await asyncio.sleep(0.1)


class FrontTestServer(TestServer):
    """aiohttp's test server, with its client sent through the HLS front door.

    ``realcast-box serve`` puts the front door (realcast_box/hls/front.py)
    on its plain HTTP port, so the end-to-end tests reach the box the same
    way. aiohttp's own site stays open beside it, unused.

    The front door hands a connection to aiohttp for good at its first
    request of another kind, such as the login of every test. So the
    client's relative /hls/ paths go to a second front door port
    (``hls_port``), whose connections carry only /hls/ requests, as a
    player's do. Everything else goes to ``port``.
    """

    async def start_server(self, loop=None, **kwargs) -> None:
        await super().start_server(loop=loop, **kwargs)
        assert self.runner is not None
        sock = self.socket_factory(self.host, 0, socket.AF_INET)
        self.front_site = FrontSite(self.runner, sock=sock)
        await self.front_site.start()
        self.port = sock.getsockname()[1]
        self._root = URL(f"http://{self.host}:{self.port}")
        hls_sock = self.socket_factory(self.host, 0, socket.AF_INET)
        self.hls_site = FrontSite(self.runner, sock=hls_sock)
        await self.hls_site.start()
        self.hls_port = hls_sock.getsockname()[1]

    def make_url(self, path) -> URL:
        url = super().make_url(path)
        if url.port == self.port and url.path.startswith("/hls/"):
            return url.with_port(self.hls_port)
        return url


class FreshWindowClock:
    """The wall clock moved back to one second after the current hour began.

    The rate limiter counts in windows aligned to the clock, so a test that
    counts requests across a minute boundary would see its count restart.
    With this clock each test starts in a fresh minute and a fresh hour, and
    has 59 seconds before the minute window rolls over.
    """

    def __init__(self) -> None:
        now = time.time()
        self._offset = (now // 3600) * 3600 + 1 - now

    def __call__(self) -> float:
        return time.time() + self._offset


def use_fresh_rate_window(app: web.Application) -> None:
    """Give ``app``, not yet started, a rate limiter on a FreshWindowClock."""
    app[RATE_LIMITER] = RateLimiter(clock=FreshWindowClock())


async def start_box(
    aiohttp_client, tmp_path: Path, *, front_door: bool = True, **overrides
) -> Box:
    """Start a box in the test's loop, registered and logged in as a publisher.

    Its client reaches it through the HLS front door unless ``front_door``
    is false.
    """
    settings = {"data_dir": str(tmp_path / "data"), "host": "127.0.0.1"}
    settings["rtmp_port"] = 0
    # Tests poll the status endpoint many times a second; rate-limit tests
    # pass their own small limits.
    for name in ("rate_limit_per_minute", "stream_rate_limit_per_minute"):
        settings[name] = 100_000
    for name in ("rate_limit_per_hour", "stream_rate_limit_per_hour"):
        settings[name] = 1_000_000
    settings.update(overrides)
    config = load_config(None, environ={}, overrides=settings)
    app = create_app(config)
    use_fresh_rate_window(app)
    client = await aiohttp_client(FrontTestServer(app) if front_door else app)
    email = "publisher@example.com"
    password = "correct horse battery"
    response = await client.post(
        "/api/auth/register",
        json={"email": email, "password": password, "full_name": "Pat Publisher"},
    )
    assert response.status == 201, await response.text()
    response = await client.post(
        "/api/auth/login", json={"email": email, "password": password}
    )
    assert response.status == 200, await response.text()
    token = (await response.json())["access_token"]
    return Box(client, app, Path(settings["data_dir"]), token)


async def run_publisher(url: str, *args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run tests/publisher.py against ``url``; return (exit code, output)."""
    process = await start_publisher(url, *args)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode, output.decode(errors="replace")


async def start_publisher(url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(PUBLISHER),
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def run_ffmpeg_publisher(
    url: str,
    seconds: float,
    *,
    audio: bool = True,
    timeout: float = 60.0,
    output_options: tuple[str, ...] = (),
) -> tuple[int, str]:
    """Push ``seconds`` of lavfi test video (and a tone) with the ffmpeg CLI.

    ``output_options`` go just before the URL, such as TLS options for rtmps://.
    """
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=320x240:rate=25:duration={seconds}",
    ]
    if audio:
        command += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-bf", "0"]
    command += ["-pix_fmt", "yuv420p"]
    if audio:
        command += ["-c:a", "aac", "-b:a", "96k"]
    command += ["-f", "flv", *output_options, url]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode, output.decode(errors="replace")


def parse_sent(output: str) -> tuple[int, int]:
    match = re.search(r"sent video=(\d+) audio=(\d+)", output)
    assert match, f"publisher did not finish: {output}"
    return int(match.group(1)), int(match.group(2))


@dataclass
class HlsDownload:
    multivariant: str
    media_playlist: str
    segment_files: list[Path]
    # One local MP4 per init segment: the init followed by its media segments.
    joined_files: list[Path]


async def download_hls(client: TestClient, hls_path: str, folder: Path) -> HlsDownload:
    """Fetch a stream's playlists and segments over HTTP into ``folder``.

    Waits until the media playlist lists a whole segment: with low-latency
    HLS it appears at the first part, and the files are read with FFmpeg.
    """
    response = await client.get(hls_path)
    assert response.status == 200, await response.text()
    multivariant = await response.text()
    variant = next(
        line for line in multivariant.splitlines() if line and not line.startswith("#")
    )
    base = hls_path.rsplit("/", 1)[0]
    media_path = f"{base}/{variant}"
    deadline = asyncio.get_running_loop().time() + SEGMENT_WAIT_SECONDS
    while True:
        response = await client.get(media_path)
        assert response.status == 200, await response.text()
        media_playlist = await response.text()
        if "#EXTINF" in media_playlist:
            break
        assert asyncio.get_running_loop().time() < deadline, media_playlist
        await asyncio.sleep(0.1)
    media_base = media_path.rsplit("/", 1)[0]

    folder.mkdir(parents=True, exist_ok=True)
    segment_files: list[Path] = []
    joined_files: list[Path] = []
    current_init = b""
    joined = None
    for line in media_playlist.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            uri = re.search(r'URI="([^"]+)"', line).group(1)
            response = await client.get(f"{media_base}/{uri}")
            assert response.status == 200
            current_init = await response.read()
            joined = folder / f"joined-{len(joined_files)}.mp4"
            joined.write_bytes(current_init)
            joined_files.append(joined)
        elif line and not line.startswith("#"):
            response = await client.get(f"{media_base}/{line}")
            assert response.status == 200
            data = await response.read()
            path = folder / Path(line).name
            path.write_bytes(current_init + data)
            segment_files.append(path)
            with joined.open("ab") as file:
                file.write(data)
    return HlsDownload(multivariant, media_playlist, segment_files, joined_files)


@dataclass
class DecodedMedia:
    video_frames: int = 0
    audio_frames: int = 0
    video_pts: list[float] | None = None
    audio_pts: list[float] | None = None
    duration: float = 0.0
    width: int = 0
    height: int = 0


def decode_file(path: Path) -> DecodedMedia:
    """Decode every frame of an MP4 with PyAV, recording pts in seconds."""
    result = DecodedMedia(video_pts=[], audio_pts=[])
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for frame in container.decode(*streams):
            seconds = float(frame.pts * frame.time_base)
            if isinstance(frame, av.VideoFrame):
                result.video_frames += 1
                result.video_pts.append(seconds)
                result.width, result.height = frame.width, frame.height
            else:
                result.audio_frames += 1
                result.audio_pts.append(seconds)
    all_pts = result.video_pts + result.audio_pts
    if all_pts:
        result.duration = max(all_pts) - min(all_pts)
    return result


def first_frame_is_keyframe(path: Path) -> bool:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        for packet in container.demux(video):
            if packet.size:
                return packet.is_keyframe
    return False
