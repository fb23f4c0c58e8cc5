"""Helpers for HLS playback tests: a small HLS tree on disk, tokens, URIs."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from realcast_box.hls import playback
from realcast_box.store.ids import utc_now
from tests.box import TESTS_DIR, Box
from tests.hls_reader import wait_for_segment

READER = TESTS_DIR / "hls_reader.py"

MULTIVARIANT = (
    "#EXTM3U\n"
    "#EXT-X-VERSION:7\n"
    "#EXT-X-INDEPENDENT-SEGMENTS\n"
    '#EXT-X-STREAM-INF:BANDWIDTH=1000000,CODECS="avc1.64001f"\n'
    "source/index.m3u8\n"
)
MEDIA_PLAYLIST = (
    "#EXTM3U\n"
    "#EXT-X-VERSION:7\n"
    "#EXT-X-TARGETDURATION:2\n"
    "#EXT-X-MEDIA-SEQUENCE:1\n"
    '#EXT-X-MAP:URI="init-0.mp4"\n'
    "#EXTINF:2.000,\n"
    "seg-1.m4s\n"
    "#EXTINF:2.000,\n"
    "seg-2.m4s\n"
)
SEGMENT_BYTES = bytes(range(256)) * 4
INIT_BYTES = b"\x00\x00\x00\x18ftypiso6" + b"\x00" * 16


def write_hls_tree(box: Box, stream_id: str) -> Path:
    """Write a multivariant playlist, a media playlist and segments for a stream."""
    folder = box.hub.hls_root / stream_id
    rendition = folder / "source"
    rendition.mkdir(parents=True)
    (folder / "index.m3u8").write_text(MULTIVARIANT)
    (rendition / "index.m3u8").write_text(MEDIA_PLAYLIST)
    (rendition / "init-0.mp4").write_bytes(INIT_BYTES)
    (rendition / "seg-1.m4s").write_bytes(SEGMENT_BYTES)
    (rendition / "seg-2.m4s").write_bytes(SEGMENT_BYTES[::-1])
    return folder


async def create_app_and_stream(
    box: Box, *, app_settings: dict | None = None, stream_settings: dict | None = None
) -> dict:
    """Create an app and a stream in it through the API; return the stream."""
    response = await box.client.post(
        "/api/apps",
        json={"name": "Playback app", "settings": app_settings or {}},
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    app_id = (await response.json())["id"]
    response = await box.client.post(
        "/api/streams",
        json={"app_id": app_id, "title": "Show", "settings": stream_settings or {}},
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def signed_stream(box: Box) -> dict:
    """Create a stream with playback_policy signed and a fake HLS tree for it."""
    stream = await create_app_and_stream(
        box, stream_settings={"playback_policy": "signed"}
    )
    write_hls_tree(box, stream["id"])
    return stream


async def issue_token(box: Box, stream_id: str, viewer_id: str = "viewer_1") -> dict:
    response = await box.client.post(
        f"/api/streams/{stream_id}/playback-token",
        json={"viewer_id": viewer_id},
        headers=box.auth,
    )
    assert response.status == 200, await response.text()
    return await response.json()


def craft_token(
    box: Box,
    stream_id: str,
    viewer_id: str = "viewer_1",
    *,
    issued_seconds_ago: int = 0,
    expiry_minutes: int = 1,
    generation: int = 0,
) -> str:
    """Sign a playback token with the box's secret, issued in the past."""
    token, _ = playback.create_playback_token(
        box.app[playback.PLAYBACK_SECRET],
        stream_id,
        viewer_id,
        generation=generation,
        expiry_minutes=expiry_minutes,
        now=utc_now() - timedelta(seconds=issued_seconds_ago),
    )
    return token


def craft_session(
    box: Box,
    stream_id: str,
    key: str = "viewer_1",
    *,
    kind: str = playback.TOKEN_SESSION,
    signed_seconds_ago: int = 0,
    generation: int = 0,
) -> str:
    """Sign a playback session signature with the box's secret."""
    session = playback.PlaybackSession(
        kind, key, playback.unix_now() - signed_seconds_ago, generation
    )
    session_key = playback.session_key(box.app[playback.PLAYBACK_SECRET])
    return playback.sign_session(session_key, stream_id, session)


def playlist_uris(playlist: str) -> list[str]:
    """Return the URIs of a playlist: URI lines and URI="..." attributes."""
    uris = []
    for line in playlist.splitlines():
        if line.startswith("#"):
            uris.extend(re.findall(r'URI="([^"]*)"', line))
        elif line.strip():
            uris.append(line.strip())
    return uris


def query_value(uri: str, name: str) -> str | None:
    values = parse_qs(urlsplit(uri).query).get(name)
    return values[0] if values else None


async def fetch_playlists(box: Box, stream_id: str, query: str) -> tuple[str, str]:
    """Fetch the multivariant playlist with ``query``, then its media playlist.

    Returns the media playlist's URL path with query and its text.
    """
    response = await box.client.get(f"/hls/{stream_id}/index.m3u8?{query}")
    assert response.status == 200, await response.text()
    media_uri = playlist_uris(await response.text())[0]
    media_path = f"/hls/{stream_id}/{media_uri}"
    response = await box.client.get(media_path)
    assert response.status == 200, await response.text()
    return media_path, await response.text()


async def read_with_pyav(url: str, timeout: float = 90.0) -> tuple[int, dict | str]:
    """Play ``url`` to its end with tests/hls_reader.py in a child process.

    Returns (exit code, the reader's JSON result or its output on failure).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(READER),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    if process.returncode != 0:
        return process.returncode, text
    return 0, json.loads(text.strip().splitlines()[-1])


async def ffprobe(url: str, timeout: float = 60.0) -> tuple[int, dict | str]:
    """Run ffprobe on ``url``; return (exit code, its streams by type or stderr).

    Waits first until the playlist lists a whole segment, which FFmpeg needs.
    """
    await asyncio.to_thread(wait_for_segment, url)
    process = await asyncio.create_subprocess_exec(
        "ffprobe",
        "-v",
        "error",
        "-show_entries",
        "stream=codec_type,codec_name,width,height",
        "-of",
        "json",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    if process.returncode != 0:
        return process.returncode, stderr.decode(errors="replace")
    streams = json.loads(stdout)["streams"]
    return 0, {stream["codec_type"]: stream for stream in streams}
