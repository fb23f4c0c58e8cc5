"""The box's fMP4 HLS output played by hls.js in a real headless Chromium.

Chromium is Debian's package (.ci/run installs it with apt-get), driven by
Playwright for Python through its executable_path, so Playwright never
downloads a browser of its own. hls.js is the copy vendored in ui/vendor/.
The player page comes from a second aiohttp server on 127.0.0.1, so hls.js
fetches the box's HLS cross-origin, as an embedding web page would.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Page, Response, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.box import Box, download_hls, run_publisher, start_box, start_publisher

CHROMIUM = "/usr/bin/chromium"
HLS_JS = Path(__file__).parent.parent / "ui" / "vendor" / "hls.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox",  # Chromium's sandbox does not start as root, and CI is root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Not a multiple of 16, so the decoded size relies on the SPS cropping.
WIDTH, HEIGHT = 480, 270

# window.player collects what the checks read: every hls.js error (fatal or
# not), the levels hls.js parsed, the codecs it gave to MSE, whether the media
# playlist was live and later ended, its first and latest media sequence, the
# media time at the first 'playing' event and whether the video fired 'ended'.
PLAYER_PAGE = """<!doctype html>
<html>
<head>
<meta charset="utf-8"><link rel="icon" href="data:,"><title>hls.js player</title>
</head>
<body>
<video id="video" muted autoplay playsinline></video>
<script src="/hls.min.js"></script>
<script>
const video = document.getElementById("video");
window.player = {
  video, hlsVersion: Hls.version, errors: [], fatal: false, levels: null,
  bufferCodecs: null, playingAt: null, ended: false, liveSeen: false,
  lastLevelLive: null, firstStartSN: null, lastStartSN: null, events: [],
  firstLoad: null,
};

function describeError(data) {
  return {
    type: data.type, details: data.details, fatal: data.fatal,
    reason: data.reason || null,
    message: data.error ? String(data.error.message || data.error) : null,
    url: (data.frag && data.frag.url) || (data.context && data.context.url) || null,
    responseCode: data.response ? data.response.code : null,
    mimeType: data.mimeType || null,
    sourceBufferName: data.sourceBufferName || null,
    currentTime: video.currentTime,
  };
}

function recordHlsEvents(hls) {
  hls.on(Hls.Events.ERROR, (event, data) => {
    window.player.errors.push(describeError(data));
    if (data.fatal) window.player.fatal = true;
  });
  hls.on(Hls.Events.MANIFEST_PARSED, (event, data) => {
    window.player.levels = data.levels.map((level) => ({
      width: level.width, height: level.height, videoCodec: level.videoCodec,
      audioCodec: level.audioCodec, bitrate: level.bitrate,
    }));
    video.play().catch((error) => window.player.events.push("play: " + error));
  });
  hls.on(Hls.Events.LEVEL_LOADED, (event, data) => {
    // hls.js sets details.live to false once the playlist has EXT-X-ENDLIST.
    if (data.details.live) window.player.liveSeen = true;
    window.player.lastLevelLive = data.details.live;
    // startSN is the playlist's EXT-X-MEDIA-SEQUENCE.
    if (window.player.firstStartSN === null) {
      window.player.firstStartSN = data.details.startSN;
    }
    window.player.lastStartSN = data.details.startSN;
  });
  hls.on(Hls.Events.BUFFER_CODECS, (event, data) => {
    const tracks = Object.entries(data).filter(([name, track]) => track.codec);
    window.player.bufferCodecs = Object.fromEntries(tracks.map(
      ([name, track]) => [name, {codec: track.codec, container: track.container}]));
  });
  hls.on(Hls.Events.BUFFER_EOS, () => window.player.events.push("bufferEos"));
  // The first media request: a whole segment, or a part (data.part is set).
  hls.on(Hls.Events.FRAG_LOADING, (event, data) => {
    if (window.player.firstLoad !== null || data.frag.sn === "initSegment") return;
    window.player.firstLoad = {
      sn: data.frag.sn, part: data.part ? data.part.index : null,
    };
  });
}

function recordVideoEvents() {
  video.addEventListener("playing", () => {
    if (window.player.playingAt === null) window.player.playingAt = video.currentTime;
  });
  video.addEventListener("ended", () => { window.player.ended = true; });
  video.addEventListener("error", () => {
    window.player.fatal = true;
    const error = video.error;
    window.player.errors.push({type: "videoElement", fatal: true,
      details: error ? error.code + ": " + error.message : "unknown"});
  });
}

function startPlayer(url) {
  const hls = new Hls();
  window.hls = hls;
  recordHlsEvents(hls);
  recordVideoEvents();
  hls.loadSource(url);
  hls.attachMedia(video);
}
</script>
</body>
</html>
"""

# Everything the assertions and failure messages need, as plain JSON.
PLAYER_STATE = """() => {
  const p = window.player;
  const v = p.video;
  return {
    hlsVersion: p.hlsVersion, errors: p.errors, fatal: p.fatal, levels: p.levels,
    bufferCodecs: p.bufferCodecs, playingAt: p.playingAt, ended: p.ended,
    liveSeen: p.liveSeen, lastLevelLive: p.lastLevelLive, events: p.events,
    firstStartSN: p.firstStartSN, lastStartSN: p.lastStartSN, firstLoad: p.firstLoad,
    currentTime: v.currentTime, duration: v.duration, paused: v.paused,
    readyState: v.readyState, videoWidth: v.videoWidth, videoHeight: v.videoHeight,
  };
}"""


def require_chromium() -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"Chromium missing at {CHROMIUM}: .ci/run installs it with apt-get")


async def serve_player_page(aiohttp_server) -> str:
    """Start the page server on 127.0.0.1 and return the player page's URL."""

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PLAYER_PAGE, content_type="text/html")

    async def script(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(HLS_JS)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/hls.min.js", script)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/"))


@dataclass
class Player:
    """The player page and the console messages and page errors it logged."""

    page: Page
    console: list[str]

    async def start(self, hls_url: str) -> None:
        await self.page.evaluate("url => startPlayer(url)", hls_url)

    async def state(self) -> dict:
        state = await self.page.evaluate(PLAYER_STATE)
        state["console"] = self.console
        return state


def log_http_error(response: Response, console: list[str]) -> None:
    if response.status >= 400:
        console.append(f"HTTP {response.status} {response.url}")


@asynccontextmanager
async def open_player(tmp_path: Path, page_url: str) -> AsyncIterator[Player]:
    """Open the player page in headless Chromium with a fresh profile."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
            page.on("response", lambda response: log_http_error(response, console))
            await page.goto(page_url, timeout=10_000)
            yield Player(page, console)
        finally:
            await context.close()


async def wait_for_player(player: Player, condition: str, timeout: float) -> dict:
    """Wait until ``condition`` (JS, of ``p`` = window.player) is true or hls.js fails.

    Return the player state. A fatal error ends the wait early, and the
    caller's asserts report it.
    """
    expression = f"(p => p.fatal || ({condition}))(window.player)"
    try:
        await player.page.wait_for_function(
            expression, timeout=timeout * 1000, polling=100
        )
    except PlaywrightTimeoutError:
        state = await player.state()
        raise AssertionError(
            f"player timed out after {timeout} s waiting for {condition}: "
            f"{json.dumps(state, indent=1)}"
        ) from None
    return await player.state()


async def fetch_media_playlist(box: Box, stream_id: str) -> str | None:
    """Return the stream's media playlist, or None while the box has none yet."""
    response = await box.client.get(f"/hls/{stream_id}/index.m3u8")
    if response.status != 200:
        return None
    lines = (await response.text()).splitlines()
    variant = next(line for line in lines if line and not line.startswith("#"))
    response = await box.client.get(f"/hls/{stream_id}/{variant}")
    if response.status != 200:
        return None
    return await response.text()


async def wait_for_media_sequence(
    box: Box, stream_id: str, minimum: int = 0, timeout: float = 20.0
) -> None:
    """Wait until the media playlist's EXT-X-MEDIA-SEQUENCE is at least ``minimum``."""
    deadline = asyncio.get_running_loop().time() + timeout
    playlist = None
    while asyncio.get_running_loop().time() < deadline:
        playlist = await fetch_media_playlist(box, stream_id)
        match = re.search(r"^#EXT-X-MEDIA-SEQUENCE:(\d+)$", playlist or "", re.M)
        if match and int(match.group(1)) >= minimum:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"media sequence of {stream_id} stayed below {minimum} for {timeout} s: "
        f"{playlist}"
    )


async def stop_publisher(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


async def start_player_push(box, stream: dict, *, seconds: int):
    """Start a real-time push of ``seconds`` at the player page's video size."""
    return await start_publisher(
        box.rtmp_url(stream["stream_key"]),
        "--seconds",
        str(seconds),
        "--realtime",
        "--width",
        str(WIDTH),
        "--height",
        str(HEIGHT),
    )


def fatal_errors(state: dict) -> list[dict]:
    return [error for error in state["errors"] if error["fatal"]]


async def test_hls_browser_plays_live_stream(aiohttp_client, aiohttp_server, tmp_path):
    require_chromium()
    # A 3-segment window starts sliding early, so the player joins mid-stream
    # and keeps playing while segments leave the playlist. hls.js 1.7.4 puts the
    # first segment it loads at media time 0, so currentTime counts from the join.
    box = await start_box(aiohttp_client, tmp_path, hls_window=3)
    stream = await box.create_stream()
    page_url = await serve_player_page(aiohttp_server)
    publisher = await start_player_push(box, stream, seconds=20)
    try:
        await box.wait_for_status(stream["id"], "live")
        await wait_for_media_sequence(box, stream["id"], minimum=1)
        async with open_player(tmp_path, page_url) as player:
            await player.start(stream["hls_url"])
            condition = (
                "p.playingAt !== null && p.video.currentTime > p.playingAt + 4"
                " && p.lastStartSN > p.firstStartSN"
            )
            state = await wait_for_player(player, condition, timeout=25)
    finally:
        await stop_publisher(publisher)

    report = json.dumps(state, indent=1)
    assert fatal_errors(state) == [], report
    assert state["liveSeen"], report
    assert state["firstStartSN"] >= 1, report
    assert state["lastStartSN"] > state["firstStartSN"], report
    assert state["currentTime"] > state["playingAt"] + 4, report
    assert state["videoWidth"] == WIDTH, report
    assert state["videoHeight"] == HEIGHT, report
    assert len(state["levels"]) == 1, report
    level = state["levels"][0]
    assert level["videoCodec"].startswith("avc1."), report
    assert level["audioCodec"] == "mp4a.40.2", report
    assert (level["width"], level["height"]) == (WIDTH, HEIGHT), report
    # The codecs hls.js read from the init segment and gave to MediaSource.
    buffer_codecs = ",".join(track["codec"] for track in state["bufferCodecs"].values())
    assert "avc1." in buffer_codecs.lower(), report
    assert "mp4a.40.2" in buffer_codecs, report


async def test_hls_browser_starts_at_first_part(
    aiohttp_client, aiohttp_server, tmp_path
):
    require_chromium()
    # hls.js 1.7.4 has lowLatencyMode on by default and starts at a part. The
    # player starts as soon as the playlists exist, which is at the first
    # part (before any whole segment) unless the machine is slow to poll.
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    page_url = await serve_player_page(aiohttp_server)
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "10", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live")
        playlist = await wait_for_media_playlist(box, stream["id"])
        async with open_player(tmp_path, page_url) as player:
            await player.start(stream["hls_url"])
            condition = "p.playingAt !== null && p.video.currentTime > p.playingAt + 2"
            state = await wait_for_player(player, condition, timeout=25)
    finally:
        await stop_publisher(publisher)

    report = json.dumps(state, indent=1)
    assert "#EXT-X-PART:" in playlist, playlist
    assert fatal_errors(state) == [], report
    assert state["firstLoad"] is not None, report
    assert state["firstLoad"]["part"] is not None, report
    assert state["currentTime"] > state["playingAt"] + 2, report


async def test_hls_browser_plays_delta_updates(
    aiohttp_client, aiohttp_server, tmp_path
):
    require_chromium()
    # A window of 10 segments offers delta updates (CAN-SKIP-UNTIL=12 s), and
    # hls.js 1.7.4 in its default low-latency mode requests them with every
    # reload. Once the playlist lists segments older than 12 s, the box skips
    # them, so the player plays for 20 s to get such deltas.
    box = await start_box(aiohttp_client, tmp_path, hls_window=10)
    stream = await box.create_stream()
    page_url = await serve_player_page(aiohttp_server)
    publisher = await start_player_push(box, stream, seconds=45)
    deltas: list[tuple[str, int]] = []
    reads: list[asyncio.Task[str]] = []

    def record_delta(response: Response) -> None:
        if "_HLS_skip=" in response.url:
            deltas.append((response.url, response.status))
            reads.append(asyncio.ensure_future(response.text()))

    try:
        await box.wait_for_status(stream["id"], "live")
        await wait_for_media_playlist(box, stream["id"])
        async with open_player(tmp_path, page_url) as player:
            player.page.on("response", record_delta)
            await player.start(stream["hls_url"])
            condition = "p.playingAt !== null && p.video.currentTime > p.playingAt + 20"
            state = await wait_for_player(player, condition, timeout=40)
            bodies = await asyncio.gather(*reads, return_exceptions=True)
    finally:
        await stop_publisher(publisher)

    skipping = [body for body in bodies if "#EXT-X-SKIP:" in str(body)]
    report = json.dumps({"state": state, "deltas": deltas[:5]}, indent=1)
    assert fatal_errors(state) == [], report
    assert deltas, report
    assert all(status == 200 for _, status in deltas), report
    assert all("_HLS_skip=YES" in url for url, _ in deltas), report
    # Some deltas really skipped segments, and playback went on through them.
    assert skipping, report
    assert state["lastStartSN"] > state["firstStartSN"], report
    assert state["currentTime"] > state["playingAt"] + 20, report


async def wait_for_media_playlist(
    box: Box, stream_id: str, timeout: float = 20.0
) -> str:
    """Return the first media playlist the box serves for ``stream_id``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        playlist = await fetch_media_playlist(box, stream_id)
        if playlist is not None:
            return playlist
        await asyncio.sleep(0.05)
    raise AssertionError(f"no media playlist for {stream_id} within {timeout} s")


async def test_hls_browser_plays_to_end(aiohttp_client, aiohttp_server, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    page_url = await serve_player_page(aiohttp_server)
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "12", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live")
        await wait_for_media_sequence(box, stream["id"])
        async with open_player(tmp_path, page_url) as player:
            await player.start(stream["hls_url"])
            output, _ = await asyncio.wait_for(publisher.communicate(), 30)
            assert publisher.returncode == 0, output.decode(errors="replace")
            await box.wait_for_status(stream["id"], "offline")
            download = await download_hls(
                box.client, f"/hls/{stream['id']}/index.m3u8", tmp_path / "dl"
            )
            state = await wait_for_player(player, "p.ended", timeout=20)
    finally:
        await stop_publisher(publisher)

    report = json.dumps(state, indent=1)
    assert "#EXT-X-ENDLIST" in download.media_playlist
    assert fatal_errors(state) == [], report
    assert state["liveSeen"], report
    assert state["lastLevelLive"] is False, report
    assert state["ended"], report


async def test_hls_browser_plays_ended_stream(aiohttp_client, aiohttp_server, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    page_url = await serve_player_page(aiohttp_server)
    code, output = await run_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "6"
    )
    assert code == 0, output
    await box.wait_for_status(stream["id"], "offline")

    async with open_player(tmp_path, page_url) as player:
        await player.start(stream["hls_url"])
        state = await wait_for_player(player, "p.ended", timeout=20)

    report = json.dumps(state, indent=1)
    assert fatal_errors(state) == [], report
    assert state["liveSeen"] is False, report
    assert state["playingAt"] < 1, report
    assert state["ended"], report
