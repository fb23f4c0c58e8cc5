"""Routes that issue and revoke playback tokens for a stream's HLS output.

A playback token lets one viewer start playing a stream whose
``settings.playback_policy`` (or its app's) is ``signed``; hls/access.py
checks it. Issuing a token needs streams:read, revoking needs
streams:write, on the caller's own streams.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aiohttp import web

from realcast_box.api import validation
from realcast_box.api.audit import audited
from realcast_box.api.identity import authorize
from realcast_box.api.security import load_or_create_secret
from realcast_box.api.streams import find_stream, public_urls
from realcast_box.appkeys import CONFIG, DATABASE
from realcast_box.hls import playback
from realcast_box.store import playback as playback_store
from realcast_box.store.ids import format_timestamp, utc_now

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


def expiry_minutes(value: Any, field: str) -> int:
    """Check a token lifetime: an integer number of minutes from 1 to 1440."""
    low, high = playback.MIN_EXPIRY_MINUTES, playback.MAX_EXPIRY_MINUTES
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
    ):
        raise validation.bad_request(
            field, f"must be an integer from {low} to {high} (minutes), got {value!r}"
        )
    return value


TOKEN_FIELDS = (
    validation.Field(
        "viewer_id",
        functools.partial(validation.text, max_length=playback.MAX_VIEWER_ID_LENGTH),
        required=True,
    ),
    validation.Field("expiry_minutes", expiry_minutes),
)


def playback_secret(app: web.Application) -> bytes:
    """Return the playback secret that app.py loaded at start.

    An application built without app.py's start-up (one serving the API
    alone) reads the file from the data directory instead, creating it on
    first use.
    """
    secret = app.get(playback.PLAYBACK_SECRET)
    if secret is None:
        path = app[CONFIG].data_path / playback.PLAYBACK_SECRET_FILE
        secret = load_or_create_secret(path)
    return secret


@routes.post("/api/streams/{stream_id}/playback-token")
async def create_playback_token(request: web.Request) -> web.Response:
    identity = await authorize(request, "streams:read")
    stream_id = request.match_info["stream_id"]
    fields = await validation.read_fields(request, TOKEN_FIELDS)
    await find_stream(request, identity, stream_id)

    database = request.app[DATABASE]
    generation = await playback_store.get_generation(database, stream_id)
    token, expires_at = playback.create_playback_token(
        playback_secret(request.app),
        stream_id,
        fields["viewer_id"],
        generation=generation,
        expiry_minutes=fields.get("expiry_minutes", playback.DEFAULT_EXPIRY_MINUTES),
        now=utc_now(),
    )
    hls_url = public_urls(request, request.app[CONFIG], stream_id)["hls_url"]
    return web.json_response(
        {
            "playback_token": token,
            "playback_url": f"{hls_url}?{playback.TOKEN_PARAMETER}={token}",
            "expires_at": format_timestamp(expires_at),
        }
    )


@routes.post("/api/streams/{stream_id}/playback-token/revoke")
@audited("revoke_playback_tokens", "stream")
async def revoke_playback_tokens(request: web.Request) -> web.Response:
    identity = await authorize(request, "streams:write")
    stream_id = request.match_info["stream_id"]
    await find_stream(request, identity, stream_id)
    revoked_at = utc_now()
    await playback_store.revoke_playback_tokens(
        request.app[DATABASE], stream_id, revoked_at
    )
    logger.info(
        "user %s revoked the playback tokens of stream %s", identity.user_id, stream_id
    )
    return web.json_response(
        {"stream_id": stream_id, "revoked_at": format_timestamp(revoked_at)}
    )
