"""Routes under /api/transcoding-profiles: the ladders of qualities a stream uses.

A profile belongs to one app. A user reaches the profiles of their own apps,
and other users get 404. An API key reaches the profiles of its own app,
reading with profiles:read and changing them with profiles:write. A stream selects a
profile with settings.transcoding_profile_id, which ``check_stream_profile``
checks. A profile that a live or reconnecting stream uses cannot be deleted.
"""

from __future__ import annotations

import functools
import logging
import math
import re
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
from realcast_box.api.validation import bad_request
from realcast_box.appkeys import DATABASE, HUB
from realcast_box.store import apps as app_store
from realcast_box.store import profiles as profile_store

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

MIN_QUALITIES = 1
MAX_QUALITIES = 8
# Frame sizes in pixels. H.264 with 4:2:0 chroma needs even sizes.
MIN_DIMENSION = 16
MAX_DIMENSION = 4096
# Bitrates in kbps.
MIN_VIDEO_BITRATE = 100
MAX_VIDEO_BITRATE = 50_000
MIN_AUDIO_BITRATE = 32
MAX_AUDIO_BITRATE = 512
DEFAULT_AUDIO_BITRATE = 128
MIN_FPS = 1
MAX_FPS = 120
# Quality names become parts of HLS paths, so they are limited to URL-safe
# characters.
MAX_QUALITY_NAME_LENGTH = 32
QUALITY_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
# The passthrough rendition's name in playlists and stream status.
RESERVED_QUALITY_NAME = "source"
QUALITY_FIELDS = ("name", "width", "height", "bitrate", "fps")
# Stream states in which a stream's profile may not be deleted.
ACTIVE_STATES = ("live", "reconnecting")
PROFILE_SETTING = "transcoding_profile_id"


def _integer(value: Any, field: str, minimum: int, maximum: int) -> int:
    """Check an integer from ``minimum`` to ``maximum``; 720.0 counts as 720."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or value != int(value):
        raise bad_request(
            field, f"must be an integer from {minimum} to {maximum}, got {value!r}"
        )
    if not minimum <= value <= maximum:
        raise bad_request(field, f"must be from {minimum} to {maximum}, got {value}")
    return int(value)


def dimension(value: Any, field: str) -> int:
    size = _integer(value, field, MIN_DIMENSION, MAX_DIMENSION)
    if size % 2:
        raise bad_request(field, f"must be even, got {size}")
    return size


def frame_rate(value: Any, field: str) -> int | float:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value):
        raise bad_request(
            field, f"must be a number from {MIN_FPS} to {MAX_FPS}, got {value!r}"
        )
    if not MIN_FPS <= value <= MAX_FPS:
        raise bad_request(field, f"must be from {MIN_FPS} to {MAX_FPS}, got {value}")
    return int(value) if value == int(value) else value


def quality_name(value: Any, field: str) -> str:
    name = validation.text(value, field, max_length=MAX_QUALITY_NAME_LENGTH)
    if QUALITY_NAME_PATTERN.fullmatch(name) is None:
        raise bad_request(
            field,
            f"invalid name {name!r}: use letters, digits, '-' and '_' only",
        )
    if name.lower() == RESERVED_QUALITY_NAME:
        raise bad_request(
            field,
            f"invalid name {name!r}: {RESERVED_QUALITY_NAME!r} names the "
            "passthrough rendition; choose another",
        )
    return name


QUALITY_CHECKS = {
    "name": quality_name,
    "width": dimension,
    "height": dimension,
    "bitrate": functools.partial(
        _integer, minimum=MIN_VIDEO_BITRATE, maximum=MAX_VIDEO_BITRATE
    ),
    "fps": frame_rate,
}


def quality(value: Any, field: str) -> dict[str, Any]:
    """Check one quality object; every message starts with ``field``."""
    if not isinstance(value, dict):
        raise bad_request(
            field, "must be a JSON object with " + ", ".join(QUALITY_FIELDS)
        )
    unknown = sorted(set(value) - set(QUALITY_FIELDS))
    if unknown:
        allowed = ", ".join(QUALITY_FIELDS)
        raise bad_request(
            f"{field}.{unknown[0]}", f"unknown field (allowed: {allowed})"
        )
    checked = {}
    for name in QUALITY_FIELDS:
        if name not in value:
            raise bad_request(f"{field}.{name}", "field required")
        checked[name] = QUALITY_CHECKS[name](value[name], f"{field}.{name}")
    return checked


def qualities(value: Any, field: str) -> list[dict[str, Any]]:
    """Check the ladder: 1 to 8 quality objects with unique names."""
    if not isinstance(value, list):
        raise bad_request(field, "must be an array of quality objects")
    if not MIN_QUALITIES <= len(value) <= MAX_QUALITIES:
        raise bad_request(
            field,
            f"must have from {MIN_QUALITIES} to {MAX_QUALITIES} qualities,"
            f" got {len(value)}",
        )
    checked = [quality(item, f"{field}[{index}]") for index, item in enumerate(value)]
    seen: set[str] = set()
    for index, item in enumerate(checked):
        if item["name"] in seen:
            raise bad_request(
                f"{field}[{index}].name",
                f"duplicate name {item['name']!r}: names must be unique in a profile",
            )
        seen.add(item["name"])
    return checked


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(field, f"must be true or false, got {value!r}")
    return value


PROFILE_FIELDS = (
    validation.Field(
        "name",
        functools.partial(validation.text, max_length=validation.MAX_NAME_LENGTH),
        required=True,
    ),
    validation.Field(
        "description",
        functools.partial(
            validation.optional_text, max_length=validation.MAX_DESCRIPTION_LENGTH
        ),
    ),
    validation.Field("qualities", qualities, required=True),
    validation.Field(
        "audio_bitrate",
        functools.partial(
            _integer, minimum=MIN_AUDIO_BITRATE, maximum=MAX_AUDIO_BITRATE
        ),
    ),
    validation.Field("enable_gpu_acceleration", boolean),
)
CREATE_FIELDS = (
    validation.Field(
        "app_id",
        functools.partial(validation.text, max_length=validation.MAX_ID_LENGTH),
        required=True,
    ),
    *PROFILE_FIELDS,
)


def profile_json(profile: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": profile["id"],
        "app_id": profile["app_id"],
        "name": profile["name"],
        "description": profile["description"],
        "qualities": profile["qualities"],
        "audio_bitrate": profile["audio_bitrate"],
        "enable_gpu_acceleration": profile["enable_gpu_acceleration"],
        "created_at": profile["created_at"],
    }


def profile_not_found(profile_id: str) -> ApiError:
    return ApiError(404, f"transcoding profile not found: {profile_id}")


async def find_profile(
    request: web.Request, identity: Identity, profile_id: str
) -> dict[str, Any]:
    """Return the profile if the caller may see it, else raise the 404."""
    profile = await profile_store.get_owned_profile(
        request.app[DATABASE], profile_id, identity.user_id
    )
    if profile is None or not can_access_app(identity, profile["app_id"]):
        raise profile_not_found(profile_id)
    set_target(request, profile_id, profile["app_id"])
    return profile


@routes.post("/api/transcoding-profiles")
@audited("create_transcoding_profile", "transcoding_profile")
async def create_profile(request: web.Request) -> web.Response:
    identity = await authorize(request, "profiles:write")
    fields = await validation.read_fields(request, CREATE_FIELDS)
    app_id = fields.pop("app_id")
    database = request.app[DATABASE]
    app = await app_store.get_app(database, app_id, identity.user_id)
    if app is None or not can_access_app(identity, app_id):
        raise ApiError(404, f"app not found: {app_id}")
    fields.setdefault("audio_bitrate", DEFAULT_AUDIO_BITRATE)
    fields.setdefault("enable_gpu_acceleration", False)
    profile = await profile_store.create_profile(database, app_id, fields)
    set_target(request, profile["id"], app_id)
    logger.info(
        "user %s created transcoding profile %s in app %s",
        identity.user_id,
        profile["id"],
        app_id,
    )
    return web.json_response(profile_json(profile), status=201)


@routes.get("/api/transcoding-profiles")
async def list_profiles(request: web.Request) -> web.Response:
    identity = await authorize(request, "profiles:read")
    limit, skip = validation.pagination(request)
    app_id = effective_app_id(identity, validation.query_id(request, "app_id"))
    database = request.app[DATABASE]
    if app_id is not None:
        if await app_store.get_app(database, app_id, identity.user_id) is None:
            raise ApiError(404, f"app not found: {app_id}")
    profiles = await profile_store.list_owned_profiles(
        database, identity.user_id, app_id=app_id, limit=limit, skip=skip
    )
    total = await profile_store.count_owned_profiles(
        database, identity.user_id, app_id=app_id
    )
    return validation.page_response([profile_json(p) for p in profiles], total)


@routes.get("/api/transcoding-profiles/{profile_id}")
async def get_profile(request: web.Request) -> web.Response:
    identity = await authorize(request, "profiles:read")
    profile = await find_profile(request, identity, request.match_info["profile_id"])
    return web.json_response(profile_json(profile))


@routes.put("/api/transcoding-profiles/{profile_id}")
@audited("update_transcoding_profile", "transcoding_profile")
async def update_profile(request: web.Request) -> web.Response:
    identity = await authorize(request, "profiles:write")
    profile_id = request.match_info["profile_id"]
    fields = await validation.read_fields(request, PROFILE_FIELDS, partial=True)
    await find_profile(request, identity, profile_id)
    profile = await profile_store.update_owned_profile(
        request.app[DATABASE], profile_id, identity.user_id, fields
    )
    if profile is None:
        raise profile_not_found(profile_id)
    return web.json_response(profile_json(profile))


@routes.delete("/api/transcoding-profiles/{profile_id}")
@audited("delete_transcoding_profile", "transcoding_profile")
async def delete_profile(request: web.Request) -> web.Response:
    identity = await authorize(request, "profiles:write")
    profile_id = request.match_info["profile_id"]
    profile = await find_profile(request, identity, profile_id)
    database = request.app[DATABASE]
    hub = request.app[HUB]
    # NOTE: a stream that goes live between this check and the delete keeps
    # an id that no longer resolves, so it is passed through without a ladder.
    stream_ids = await profile_store.streams_using_profile(
        database, profile_id, profile["app_id"]
    )
    for stream_id in stream_ids:
        state = hub.state(stream_id)
        if state in ACTIVE_STATES:
            raise ApiError(
                409,
                f"transcoding profile {profile_id} is in use by stream {stream_id},"
                f" which is {state}: stop the stream or select another profile"
                " in its settings first",
            )
    if not await profile_store.delete_owned_profile(
        database, profile_id, identity.user_id
    ):
        raise profile_not_found(profile_id)
    logger.info("user %s deleted transcoding profile %s", identity.user_id, profile_id)
    return web.Response(status=204)


async def check_stream_profile(
    request: web.Request, settings: dict[str, Any], app_id: str
) -> None:
    """Raise a 400 unless settings.transcoding_profile_id names a profile of the app.

    An absent or null id selects no profile, so the stream is passed through.
    A profile of another app is rejected like an unknown one.
    """
    profile_id = settings.get(PROFILE_SETTING)
    if profile_id is None:
        return
    field = f"settings.{PROFILE_SETTING}"
    profile = await profile_store.get_app_profile(
        request.app[DATABASE], profile_id, app_id
    )
    if profile is None:
        raise bad_request(
            field,
            f"transcoding profile not found in app {app_id}: {profile_id}"
            " (create one with POST /api/transcoding-profiles, or use null for"
            " passthrough)",
        )
