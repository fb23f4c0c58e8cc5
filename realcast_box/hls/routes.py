"""HTTP routes that serve live HLS output from the data directory.

Only playlists (.m3u8), media segments (.m4s) and init segments (.mp4) below
a stream's own folder are served. Playlists change on every segment and are
never cached; segment names are unique per publishing session, so segments
are immutable and any HTTP cache or CDN can keep them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from aiohttp import web

from realcast_box.appkeys import HUB

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
}
PLAYLIST_CACHE_CONTROL = "no-cache"
SEGMENT_CACHE_CONTROL = "public, max-age=86400, immutable"
STREAM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Authorization",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range",
}


def resolve_hls_path(root: Path, stream_id: str, relative: str) -> Path | None:
    """Return the file for ``relative`` inside ``root/stream_id``, or None.

    None covers a bad stream id, an extension that is not HLS, and any path
    that would leave the stream's folder (``..``, absolute paths, symlinks).
    """
    if not STREAM_ID_PATTERN.match(stream_id):
        return None
    if Path(relative).suffix not in CONTENT_TYPES or "\x00" in relative:
        return None
    base = (root / stream_id).resolve()
    candidate = (base / relative).resolve()
    if os.path.commonpath([base, candidate]) != str(base):
        return None
    if not candidate.is_file():
        return None
    return candidate


async def serve_hls(request: web.Request) -> web.StreamResponse:
    root = request.app[HUB].hls_root
    stream_id = request.match_info["stream_id"]
    relative = request.match_info["path"]
    path = resolve_hls_path(root, stream_id, relative)
    if path is None:
        if relative == "index.m3u8" and STREAM_ID_PATTERN.match(stream_id):
            raise web.HTTPNotFound(
                text=f"no HLS output for stream {stream_id}: it is not live, or "
                "its first segment is not ready yet (retry in a few seconds)"
            )
        raise web.HTTPNotFound(text=f"HLS resource not found: {relative}")

    content_type = CONTENT_TYPES[path.suffix]
    if path.suffix == ".m3u8":
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            raise web.HTTPNotFound(text=f"HLS resource not found: {relative}") from None
        headers = {"Cache-Control": PLAYLIST_CACHE_CONTROL, **CORS_HEADERS}
        return web.Response(body=body, content_type=content_type, headers=headers)

    # FileResponse handles Range and conditional requests.
    response = web.FileResponse(path)
    response.content_type = content_type
    response.headers["Cache-Control"] = SEGMENT_CACHE_CONTROL
    response.headers.update(CORS_HEADERS)
    return response


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS_HEADERS)


def setup_hls_routes(app: web.Application) -> None:
    app.router.add_get("/hls/{stream_id}/{path:.+}", serve_hls)
    app.router.add_route("OPTIONS", "/hls/{stream_id}/{path:.+}", preflight)
