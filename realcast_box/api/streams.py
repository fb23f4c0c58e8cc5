"""Routes under /api/streams, and the RTMP and HLS URLs in stream objects.

A user sees only streams of their own apps, and other users get 404. An API
key sees the streams of its own app, reading with streams:read and changing
them with streams:write. Deleting a stream or resetting its key disconnects
its live publisher through the hub.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import re
from collections.abc import Iterable
from typing import Any

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
from realcast_box.api.profiles import check_stream_profile
from realcast_box.appkeys import CONFIG, DATABASE, HUB
from realcast_box.config import Config
from realcast_box.hls.viewers import viewer_stats
from realcast_box.live.health import bitrate_limit, ingest_warnings
from realcast_box.store import apps as app_store
from realcast_box.store import streams as stream_store

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

STREAM_FIELDS = (
    validation.Field(
        "title",
        functools.partial(validation.text, max_length=validation.MAX_NAME_LENGTH),
        required=True,
    ),
    validation.Field(
        "description",
        functools.partial(
            validation.optional_text, max_length=validation.MAX_DESCRIPTION_LENGTH
        ),
    ),
    validation.Field("settings", validation.stream_settings_object),
)
CREATE_FIELDS = (
    validation.Field(
        "app_id",
        functools.partial(validation.text, max_length=validation.MAX_ID_LENGTH),
        required=True,
    ),
    *STREAM_FIELDS,
)
# A host name, an IPv4 address, or a bracketed IPv6 address (with zone id).
HOST_PATTERN = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?\]")


def stream_not_found(stream_id: str) -> ApiError:
    return ApiError(404, f"stream not found: {stream_id}")


def split_host_header(value: str) -> tuple[str | None, int | None]:
    """Split a Host header into (host, port). IPv6 hosts keep their brackets.

    The port is None when missing or invalid. Both are None when the host
    could break a URL (such as one with "/" or "@").
    """
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[: end + 1], value[end + 1 :]
        if end == -1 or (rest and not rest.startswith(":")):
            return None, None
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    elif ":" in value:
        host = f"[{value}]"
    port = None
    if port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text) if 0 < int(port_text) <= 65535 else None
    if HOST_PATTERN.fullmatch(host) is None:
        return None, None
    return host, port


def url_host(host: str) -> str:
    """Return ``host`` as written in a URL: IPv6 addresses get brackets."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{host}]" if address.version == 6 else host


def public_urls(request: web.Request, config: Config, stream_id: str) -> dict[str, str]:
    """Return the rtmp_url and hls_url of a stream as clients should use them.

    The host is config.public_host when set, else the host the client used
    to reach the API (the Host header, else the local address). hls_url has
    the scheme of the request, so a request over HTTPS gets an HTTPS URL.
    When config.public_url is set, hls_url starts with it instead.
    With TLS configured, rtmp_url is the RTMPS URL and plain_rtmp_url the
    RTMP one, for encoders without RTMPS.
    """
    scheme, default_port = http_scheme_and_port(request, config)
    if config.public_host:
        host, http_port = url_host(config.public_host), default_port
    else:
        host, port = split_host_header(request.host)
        if host is None:
            host = _local_host(request)
        http_port = port or default_port
    http_base = config.public_url or f"{scheme}://{host}:{http_port}"
    rtmp_url = f"rtmp://{host}:{config.rtmp_port}/live"
    urls = {
        "rtmp_url": rtmp_url,
        "hls_url": f"{http_base}/hls/{stream_id}/index.m3u8",
    }
    if config.tls_enabled:
        urls["rtmp_url"] = f"rtmps://{host}:{config.rtmps_port}/live"
        urls["plain_rtmp_url"] = rtmp_url
    return urls


def http_scheme_and_port(request: web.Request, config: Config) -> tuple[str, int]:
    """Return the scheme of the request and the box's port for that scheme."""
    if request.secure:
        return "https", config.https_port
    return "http", config.http_port


def _local_host(request: web.Request) -> str:
    sockname = (
        request.transport.get_extra_info("sockname") if request.transport else None
    )
    if isinstance(sockname, tuple) and sockname:
        return url_host(str(sockname[0]))
    return "localhost"


def stream_json(request: web.Request, stream: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": stream["id"],
        "app_id": stream["app_id"],
        "title": stream["title"],
        "description": stream["description"],
        "settings": stream["settings"],
        "stream_key": stream["stream_key"],
        **public_urls(request, request.app[CONFIG], stream["id"]),
        "status": stream["status"],
        "created_at": stream["created_at"],
        "started_at": stream["started_at"],
        "ended_at": stream["ended_at"],
    }


async def disconnect_publishers(
    app: web.Application, stream_ids: Iterable[str], reason: str
) -> None:
    """Kick the live publisher of each stream. A failed kick is logged, not raised.

    Callers have already committed the change that makes the old stream key
    fail, so a publisher that reconnects is rejected.
    """
    hub = app[HUB]
    for stream_id in stream_ids:
        if hub.state(stream_id) is None:
            continue
        try:
            await hub.kick(stream_id, reason)
        except Exception:
            logger.exception("stream %s: failed to disconnect publisher", stream_id)


async def remove_streams_output(
    app: web.Application, stream_ids: Iterable[str], reason: str
) -> None:
    """Disconnect the publishers of deleted streams and delete their HLS files."""
    stream_ids = list(stream_ids)
    await disconnect_publishers(app, stream_ids, reason)
    hub = app[HUB]
    for stream_id in stream_ids:
        try:
            await hub.remove_output(stream_id)
        except OSError:
            logger.exception("stream %s: failed to delete HLS files", stream_id)
    await refresh_chat_rooms(app)


async def refresh_chat_rooms(app: web.Application) -> None:
    """Close the chat rooms of deleted streams and of streams with chat disabled."""
    # Imported here because the chat routes import this module.
    from realcast_box.api.chat import refresh_rooms

    await refresh_rooms(app)


async def find_stream(
    request: web.Request, identity: Identity, stream_id: str
) -> dict[str, Any]:
    """Return the stream if the caller may see it, else raise the 404.

    Also names the stream and its app in the request's audit entry.
    """
    stream = await stream_store.get_owned_stream(
        request.app[DATABASE], stream_id, identity.user_id
    )
    if stream is None or not can_access_app(identity, stream["app_id"]):
        raise stream_not_found(stream_id)
    set_target(request, stream_id, stream["app_id"])
    return stream


@routes.post("/api/streams")
@audited("create_stream", "stream")
async def create_stream(request: web.Request) -> web.Response:
    identity = await authorize(request, "streams:write")
    fields = await validation.read_fields(request, CREATE_FIELDS)
    app_id = fields["app_id"]

    database = request.app[DATABASE]
    app = await app_store.get_app(database, app_id, identity.user_id)
    if app is None or not can_access_app(identity, app_id):
        raise ApiError(404, f"app not found: {app_id}")
    await check_stream_profile(request, fields.get("settings", {}), app_id)
    stream = await stream_store.create_stream(
        database,
        app_id,
        fields["title"],
        fields.get("description", ""),
        fields.get("settings", {}),
    )
    set_target(request, stream["id"], app_id)
    logger.info(
        "user %s created stream %s in app %s", identity.user_id, stream["id"], app_id
    )
    return web.json_response(stream_json(request, stream), status=201)


@routes.get("/api/streams")
async def list_streams(request: web.Request) -> web.Response:
    identity = await authorize(request, "streams:read")
    limit, skip = validation.pagination(request)
    app_id = effective_app_id(identity, validation.query_id(request, "app_id"))
    database = request.app[DATABASE]
    if app_id is not None:
        if await app_store.get_app(database, app_id, identity.user_id) is None:
            raise ApiError(404, f"app not found: {app_id}")
    streams = await stream_store.list_owned_streams(
        database, identity.user_id, app_id=app_id, limit=limit, skip=skip
    )
    total = await stream_store.count_owned_streams(
        database, identity.user_id, app_id=app_id
    )
    return validation.page_response(
        [stream_json(request, stream) for stream in streams], total
    )


@routes.get("/api/streams/{stream_id}")
async def get_stream(request: web.Request) -> web.Response:
    identity = await authorize(request, "streams:read")
    stream = await find_stream(request, identity, request.match_info["stream_id"])
    return web.json_response(stream_json(request, stream))


@routes.put("/api/streams/{stream_id}")
@audited("update_stream", "stream")
async def update_stream(request: web.Request) -> web.Response:
    identity = await authorize(request, "streams:write")
    stream_id = request.match_info["stream_id"]
    fields = await validation.read_fields(request, STREAM_FIELDS, partial=True)
    current = await find_stream(request, identity, stream_id)
    if "settings" in fields:
        await check_stream_profile(request, fields["settings"], current["app_id"])
    stream = await stream_store.update_owned_stream(
        request.app[DATABASE], stream_id, identity.user_id, fields
    )
    if stream is None:
        raise stream_not_found(stream_id)
    await refresh_chat_rooms(request.app)
    return web.json_response(stream_json(request, stream))


@routes.delete("/api/streams/{stream_id}")
@audited("delete_stream", "stream")
async def delete_stream(request: web.Request) -> web.Response:
    identity = await authorize(request, "streams:write")
    stream_id = request.match_info["stream_id"]
    await find_stream(request, identity, stream_id)
    deleted = await stream_store.delete_owned_stream(
        request.app[DATABASE], stream_id, identity.user_id
    )
    if not deleted:
        raise stream_not_found(stream_id)
    logger.info("user %s deleted stream %s", identity.user_id, stream_id)
    await remove_streams_output(request.app, [stream_id], "stream deleted")
    return web.Response(status=204)


@routes.get("/api/streams/{stream_id}/status")
async def stream_status(request: web.Request) -> web.Response:
    identity = await authorize(request, "streams:read")
    stream_id = request.match_info["stream_id"]
    stream = await find_stream(request, identity, stream_id)
    return web.json_response(
        {
            "stream_id": stream_id,
            "status": stream["status"],
            **viewer_stats(request.app, stream_id),
            "started_at": stream["started_at"],
            "duration_seconds": stream_store.current_duration(stream),
            **await ingest_status(request, identity, stream),
            "renditions": rendition_status(request, stream_id),
        }
    )


def rendition_status(request: web.Request, stream_id: str) -> list[dict[str, Any]]:
    """Return the ladder's renditions of the current session; empty without one."""
    publication = request.app[HUB].publication(stream_id)
    if publication is None or publication.ladder is None:
        return []
    return publication.ladder.status()


async def ingest_status(
    request: web.Request, identity: Identity, stream: dict[str, Any]
) -> dict[str, Any]:
    """Return the ``ingest`` and ``ingest_warnings`` fields of a stream's status.

    Both describe the connected publisher's feed: ``ingest`` is None and the
    list is empty while no publisher is connected.
    """
    publication = request.app[HUB].publication(stream["id"])
    report = publication.ingest_report() if publication is not None else None
    if report is None:
        return {"ingest": None, "ingest_warnings": []}
    limit = await max_bitrate_kbps(request, identity, stream)
    warnings = ingest_warnings(
        report,
        segment_duration=request.app[CONFIG].hls_segment_duration,
        max_bitrate_kbps=limit,
    )
    return {
        "ingest": dataclasses.asdict(report),
        "ingest_warnings": [dataclasses.asdict(warning) for warning in warnings],
    }


async def max_bitrate_kbps(
    request: web.Request, identity: Identity, stream: dict[str, Any]
) -> float | None:
    """Return settings.max_bitrate_kbps of the stream, else of its app, else None."""
    app_settings = None
    if stream["settings"].get("max_bitrate_kbps") is None:
        database = request.app[DATABASE]
        app = await app_store.get_app(database, stream["app_id"], identity.user_id)
        app_settings = app["settings"] if app else None
    return bitrate_limit(stream["settings"], app_settings)


@routes.post("/api/streams/{stream_id}/reset-key")
@audited("reset_stream_key", "stream")
async def reset_stream_key(request: web.Request) -> web.Response:
    identity = await authorize(request, "streams:write")
    stream_id = request.match_info["stream_id"]
    await find_stream(request, identity, stream_id)
    stream = await stream_store.reset_owned_stream_key(
        request.app[DATABASE], stream_id, identity.user_id
    )
    if stream is None:
        raise stream_not_found(stream_id)
    logger.info("user %s reset the key of stream %s", identity.user_id, stream_id)
    await disconnect_publishers(request.app, [stream_id], "stream key reset")
    return web.json_response(stream_json(request, stream))
