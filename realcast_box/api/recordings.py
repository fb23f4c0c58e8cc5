"""Routes under /api/recordings: start, stop, list, read, update and delete.

A recording belongs to a stream of one app. A user reaches the recordings
of their own apps, and other users get 404. An API key reaches those of its
own app, reading with recordings:read and changing them with
recordings:write.

POST /api/recordings/start records the stream's live session, unless
``stream_url`` names an external source: an rtmp, rtmps, http or https URL
whose host is in the recordings_pull_allow_list setting, which the box then
pulls with PyAV. The box's own URLs of the stream (its RTMP URL with the
stream key or id, its HLS URL) record the live session too.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from realcast_box.api import validation
from realcast_box.api.audit import audited, set_target
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import (
    Identity,
    authorize,
    can_access_app,
    effective_app_id,
)
from realcast_box.api.streams import http_scheme_and_port, split_host_header, url_host
from realcast_box.api.validation import bad_request
from realcast_box.appkeys import CONFIG, DATABASE, RECORDINGS
from realcast_box.config import Config
from realcast_box.live.recordings import RecordingConflict
from realcast_box.store import apps as app_store
from realcast_box.store import recordings as recording_store
from realcast_box.store import streams as stream_store

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

PULL_SCHEMES = ("rtmp", "rtmps", "http", "https")
MAX_URL_LENGTH = 2048
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ALLOWED_HOST_PATTERN = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")

_TITLE = functools.partial(validation.text, max_length=validation.MAX_NAME_LENGTH)
_DESCRIPTION = functools.partial(
    validation.optional_text, max_length=validation.MAX_DESCRIPTION_LENGTH
)
_ID = functools.partial(validation.text, max_length=validation.MAX_ID_LENGTH)
_URL = functools.partial(validation.text, max_length=MAX_URL_LENGTH)

START_FIELDS = (
    validation.Field("stream_id", _ID, required=True),
    validation.Field("app_id", _ID),
    validation.Field("stream_url", _URL),
    validation.Field("title", _TITLE),
    validation.Field("description", _DESCRIPTION),
)
UPDATE_FIELDS = (
    validation.Field("title", _TITLE),
    validation.Field("description", _DESCRIPTION),
)


def base_url(request: web.Request, config: Config) -> str:
    """Return the box's HTTP base URL as clients should use it.

    That is config.public_url when set. Otherwise the scheme is the
    request's, so a request over HTTPS gets HTTPS URLs.
    """
    if config.public_url:
        return config.public_url
    scheme, default_port = http_scheme_and_port(request, config)
    if config.public_host:
        return f"{scheme}://{url_host(config.public_host)}:{default_port}"
    host, port = split_host_header(request.host)
    if host is None:
        host = url_host(request.url.host or "127.0.0.1")
    return f"{scheme}://{host}:{port or default_port}"


def recording_json(request: web.Request, recording: dict[str, Any]) -> dict[str, Any]:
    completed = recording["status"] == "completed"
    base = base_url(request, request.app[CONFIG])
    recording_id = recording["id"]
    return {
        "id": recording_id,
        "app_id": recording["app_id"],
        "stream_id": recording["stream_id"],
        "title": recording["title"],
        "description": recording["description"],
        "source": recording["source"],
        "stream_url": recording["stream_url"],
        "status": recording["status"],
        "failure_reason": recording["failure_reason"],
        "cdn_url": f"{base}/vod/{recording_id}.mp4" if completed else None,
        "thumbnail_url": (
            f"{base}/vod/{recording_id}/thumbnail.jpg"
            if completed and recording["has_thumbnail"]
            else None
        ),
        "duration": recording["duration"],
        "file_size": recording["file_size"],
        "created_at": recording["created_at"],
        "completed_at": recording["completed_at"],
    }


def recording_not_found(recording_id: str) -> ApiError:
    return ApiError(404, f"recording not found: {recording_id}")


async def find_recording(
    request: web.Request, identity: Identity, recording_id: str
) -> dict[str, Any]:
    """Return the recording if the caller may see it, else raise the 404."""
    recording = await recording_store.get_owned_recording(
        request.app[DATABASE], recording_id, identity.user_id
    )
    if recording is None or not can_access_app(identity, recording["app_id"]):
        raise recording_not_found(recording_id)
    set_target(request, recording_id, recording["app_id"])
    return recording


async def find_stream(
    request: web.Request, identity: Identity, stream_id: str
) -> dict[str, Any]:
    stream = await stream_store.get_owned_stream(
        request.app[DATABASE], stream_id, identity.user_id
    )
    if stream is None or not can_access_app(identity, stream["app_id"]):
        raise ApiError(404, f"stream not found: {stream_id}")
    return stream


def parse_allow_list(value: str) -> frozenset[str]:
    """Return the lower-case hosts of the recordings_pull_allow_list setting.

    Raises ValueError for an entry that is neither a host name nor an IP
    address, such as a URL or a host with a port.
    """
    hosts = set()
    for item in value.split(","):
        host = item.strip().lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host:
            continue
        if ALLOWED_HOST_PATTERN.fullmatch(host) is None:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(
                    f"{item.strip()!r} is not a host name or IP address; expected"
                    ' a comma-separated list such as "cdn.example.com,10.0.0.5"'
                ) from None
        hosts.add(host)
    return frozenset(hosts)


def _same_host(left: str, right: str) -> bool:
    try:
        return ipaddress.ip_address(left) == ipaddress.ip_address(right)
    except ValueError:
        return left == right


def is_own_url(
    request: web.Request, stream: dict[str, Any], host: str, path: str
) -> bool:
    """Return whether host and path name this box's live output of ``stream``."""
    config = request.app[CONFIG]
    own_hosts = {
        *LOOPBACK_HOSTS,
        config.public_host.lower().strip("[]"),
        (urlsplit(config.public_url).hostname or "").lower(),
    }
    request_host, _ = split_host_header(request.host)
    if request_host is not None:
        own_hosts.add(request_host.lower().strip("[]"))
    if not any(_same_host(host, own) for own in own_hosts if own):
        return False
    stream_id = stream["id"]
    own_paths = {
        f"/live/{stream_id}",
        f"/live/{stream['stream_key']}",
        f"/hls/{stream_id}/index.m3u8",
        f"/hls/{stream_id}.m3u8",
    }
    return path.rstrip("/") in own_paths


def check_stream_url(
    request: web.Request, stream: dict[str, Any], url: str
) -> str | None:
    """Return the URL to pull, or None to record the live session.

    Raises the 400 for a URL that is invalid, has another scheme, or names
    a host outside the allow-list.
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError as exc:
        raise bad_request("stream_url", f"invalid URL {url!r}: {exc}") from None
    if parts.scheme.lower() not in PULL_SCHEMES or not host:
        raise bad_request(
            "stream_url",
            f"invalid URL {url!r}: expected an rtmp, rtmps, http or https URL"
            " with a host",
        )
    if is_own_url(request, stream, host, parts.path):
        return None
    allowed = parse_allow_list(request.app[CONFIG].recordings_pull_allow_list)
    if not any(_same_host(host, entry) for entry in allowed):
        raise bad_request(
            "stream_url",
            f"host {host!r} is not in the recordings_pull_allow_list setting, so"
            " the box does not pull from it; add the host to that setting, or"
            " omit stream_url to record the stream's live session",
        )
    return url


@routes.post("/api/recordings/start")
@audited("start_recording", "recording")
async def start_recording(request: web.Request) -> web.Response:
    identity = await authorize(request, "recordings:write")
    fields = await validation.read_fields(request, START_FIELDS)
    stream = await find_stream(request, identity, fields["stream_id"])
    app_id = fields.get("app_id")
    if app_id is not None and app_id != stream["app_id"]:
        raise bad_request(
            "app_id",
            f"stream {stream['id']} belongs to app {stream['app_id']}, not {app_id}",
        )
    url = fields.get("stream_url")
    pull_url = check_stream_url(request, stream, url) if url else None
    title = fields.get("title") or stream["title"]
    description = fields.get("description", "")
    service = request.app[RECORDINGS]
    try:
        if pull_url is None:
            recording = await service.start_live(
                stream, title=title, description=description
            )
        else:
            recording = await service.start_pull(
                stream, pull_url, title=title, description=description
            )
    except RecordingConflict as exc:
        raise ApiError(409, str(exc)) from None
    set_target(request, recording["id"], stream["app_id"])
    return web.json_response(recording_json(request, recording), status=201)


@routes.post("/api/recordings/stop/{stream_id}")
@audited("stop_recording", "recording")
async def stop_recording(request: web.Request) -> web.Response:
    identity = await authorize(request, "recordings:write")
    stream = await find_stream(request, identity, request.match_info["stream_id"])
    recording = await request.app[RECORDINGS].stop(stream["id"])
    if recording is None:
        raise ApiError(
            404,
            f"no active recording of stream {stream['id']}: start one with"
            " POST /api/recordings/start",
        )
    set_target(request, recording["id"], stream["app_id"])
    return web.json_response(recording_json(request, recording))


async def _list_recordings(request: web.Request) -> web.Response:
    identity = await authorize(request, "recordings:read")
    limit, skip = validation.pagination(request)
    app_id = effective_app_id(identity, validation.query_id(request, "app_id"))
    stream_id = validation.query_id(request, "stream_id")
    database = request.app[DATABASE]
    if app_id is not None:
        if await app_store.get_app(database, app_id, identity.user_id) is None:
            raise ApiError(404, f"app not found: {app_id}")
    if stream_id is not None:
        await find_stream(request, identity, stream_id)
    recordings = await recording_store.list_owned_recordings(
        database,
        identity.user_id,
        app_id=app_id,
        stream_id=stream_id,
        limit=limit,
        skip=skip,
    )
    total = await recording_store.count_owned_recordings(
        database, identity.user_id, app_id=app_id, stream_id=stream_id
    )
    return validation.page_response(
        [recording_json(request, r) for r in recordings], total
    )


# The API reference writes the listing with a trailing slash; both work.
routes.get("/api/recordings/")(_list_recordings)
routes.get("/api/recordings")(_list_recordings)


@routes.get("/api/recordings/{recording_id}")
async def get_recording(request: web.Request) -> web.Response:
    identity = await authorize(request, "recordings:read")
    recording = await find_recording(
        request, identity, request.match_info["recording_id"]
    )
    return web.json_response(recording_json(request, recording))


@routes.put("/api/recordings/{recording_id}")
@audited("update_recording", "recording")
async def update_recording(request: web.Request) -> web.Response:
    identity = await authorize(request, "recordings:write")
    recording_id = request.match_info["recording_id"]
    fields = await validation.read_fields(request, UPDATE_FIELDS, partial=True)
    await find_recording(request, identity, recording_id)
    database = request.app[DATABASE]
    await recording_store.update_recording_text(database, recording_id, fields)
    recording = await recording_store.get_recording(database, recording_id)
    if recording is None:
        raise recording_not_found(recording_id)
    return web.json_response(recording_json(request, recording))


@routes.delete("/api/recordings/{recording_id}")
@audited("delete_recording", "recording")
async def delete_recording(request: web.Request) -> web.Response:
    identity = await authorize(request, "recordings:write")
    recording_id = request.match_info["recording_id"]
    recording = await find_recording(request, identity, recording_id)
    if recording["status"] in recording_store.UNFINISHED_STATUSES:
        raise ApiError(
            409,
            f"recording {recording_id} is {recording['status']}: stop it with"
            f" POST /api/recordings/stop/{recording['stream_id']} and wait until"
            " it is completed or failed",
        )
    if not await recording_store.delete_recording(request.app[DATABASE], recording_id):
        raise recording_not_found(recording_id)
    await request.app[RECORDINGS].delete_files(recording_id)
    logger.info("user %s deleted recording %s", identity.user_id, recording_id)
    return web.Response(status=204)
