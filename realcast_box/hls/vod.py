"""HTTP routes that serve completed recordings: /vod/{id}.mp4 and its poster frame.

Access follows the playback policy of the recording's stream, as for its
live HLS segments (hls/access.py). Anyone may fetch the recordings of a
public stream. Those of a signed stream need a playback token of that
stream (``token`` query parameter or Bearer header) or a fresh session
signature.

aiohttp's FileResponse (3.14) serves single byte ranges, suffix ranges and
HEAD, returns 416 with ``Content-Range: bytes */size`` past the end, and
applies an If-Range date. Three cases are handled here first, following
RFC 9110 section 14. A request with several ranges gets the whole file,
where aiohttp would return 416. An If-Range entity tag other than the
file's current strong ETag gets the whole file, because aiohttp ignores
entity tags in If-Range. The empty suffix range ``bytes=-0`` gets 416.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import hdrs, web

from realcast_box.api.errors import ApiError
from realcast_box.appkeys import DATABASE, RECORDINGS
from realcast_box.hls.access import Resource, authorize_hls
from realcast_box.hls.cors import HLS_CORS
from realcast_box.hls.routes import preflight
from realcast_box.store import recordings as recording_store

RECORDING_ID_PATTERN = re.compile(r"^rec_[A-Za-z0-9]{1,64}$")
VOD_CACHE_CONTROL = "private, max-age=3600"
EMPTY_SUFFIX_RANGE = re.compile(r"^\s*bytes\s*=\s*-0+\s*$", re.IGNORECASE)


class _VodFileResponse(web.FileResponse):
    """A FileResponse that serves the whole file when ``full_file`` is set."""

    def __init__(self, path: Path, *, full_file: bool) -> None:
        super().__init__(path)
        self._full_file = full_file

    async def prepare(self, request: web.BaseRequest):  # type: ignore[override]
        if self._full_file:
            headers = request.headers.copy()
            headers.popall(hdrs.RANGE, None)
            headers.popall(hdrs.IF_RANGE, None)
            request = request.clone(headers=headers)
        return await super().prepare(request)


def _strong_etag(path: Path) -> str:
    """Return the ETag that aiohttp's FileResponse sends for ``path``."""
    stat = path.stat()
    return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'


def _serves_whole_file(request: web.Request, path: Path) -> bool:
    """Return whether the Range header must be ignored for this request."""
    range_header = request.headers.get(hdrs.RANGE)
    if range_header is None:
        return False
    if "," in range_header:
        return True
    if_range = request.headers.get(hdrs.IF_RANGE, "").strip()
    if if_range.startswith(('"', "W/")):
        # If-Range needs a strong comparison, so a weak tag never matches.
        return if_range != _strong_etag(path)
    return False


async def _completed_recording(
    request: web.Request, recording_id: str, cors: dict[str, str]
) -> dict:
    recording = None
    if RECORDING_ID_PATTERN.match(recording_id):
        recording = await recording_store.get_recording(
            request.app[DATABASE], recording_id
        )
    if recording is None or recording["status"] != "completed":
        raise ApiError(404, f"recording not found: {recording_id}", headers=cors)
    await authorize_hls(request, recording["stream_id"], Resource.SEGMENT, cors)
    return recording


def _file_response(
    request: web.Request, path: Path, content_type: str, cors: dict[str, str]
) -> web.StreamResponse:
    if not path.is_file():
        raise ApiError(404, f"file not found: {request.path}", headers=cors)
    if EMPTY_SUFFIX_RANGE.match(request.headers.get(hdrs.RANGE, "")):
        size = path.stat().st_size
        raise ApiError(
            416,
            "range not satisfiable: bytes=-0 selects no bytes",
            headers={**cors, "Content-Range": f"bytes */{size}"},
        )
    response = _VodFileResponse(path, full_file=_serves_whole_file(request, path))
    response.content_type = content_type
    response.headers["Cache-Control"] = VOD_CACHE_CONTROL
    response.headers.update(cors)
    return response


async def serve_recording(request: web.Request) -> web.StreamResponse:
    recording_id = request.match_info["recording_id"]
    cors = request.app[HLS_CORS].headers(request.headers.get("Origin"))
    await _completed_recording(request, recording_id, cors)
    path = request.app[RECORDINGS].file_path(recording_id)
    return _file_response(request, path, "video/mp4", cors)


async def serve_thumbnail(request: web.Request) -> web.StreamResponse:
    recording_id = request.match_info["recording_id"]
    cors = request.app[HLS_CORS].headers(request.headers.get("Origin"))
    await _completed_recording(request, recording_id, cors)
    path = request.app[RECORDINGS].thumbnail_path(recording_id)
    return _file_response(request, path, "image/jpeg", cors)


def setup_vod_routes(app: web.Application) -> None:
    """Add the /vod routes; call after setup_hls_routes, whose CORS policy they use."""
    app.router.add_get("/vod/{recording_id}.mp4", serve_recording)
    app.router.add_get("/vod/{recording_id}/thumbnail.jpg", serve_thumbnail)
    app.router.add_route("OPTIONS", "/vod/{recording_id}.mp4", preflight)
    app.router.add_route("OPTIONS", "/vod/{recording_id}/thumbnail.jpg", preflight)
