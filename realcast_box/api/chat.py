"""Routes under /api/streams/{stream_id}/chat: the WebSocket, history, bans.

Reading history and bans needs chat:read; sending as a bot, deleting
messages and banning need chat:write, on the caller's own streams. Users
(the streamer) pass both. Deletions, bans and lifted bans are audited.
"""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from typing import Any

from aiohttp import web

from realcast_box.api import validation
from realcast_box.api.audit import audited, set_target
from realcast_box.api.chat_socket import CHAT_HUB, ban_text, chat_socket
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import Identity, authorize
from realcast_box.api.streams import find_stream
from realcast_box.appkeys import CONFIG, DATABASE
from realcast_box.chat import protocol
from realcast_box.chat.hub import ChatHub, ChatLimits, Participant
from realcast_box.hls.playback import MAX_VIEWER_ID_LENGTH
from realcast_box.store import chat as chat_store
from realcast_box.store import users as user_store
from realcast_box.store.ids import utc_now

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_BAN_MINUTES = 525_600  # one year
MAX_REASON_LENGTH = 200


def duration_minutes(value: Any, field: str) -> int | None:
    """Check a ban's length: null (permanent) or whole minutes up to a year."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise validation.bad_request(
            field, f"must be an integer or null, got {value!r}"
        )
    if not 1 <= value <= MAX_BAN_MINUTES:
        raise validation.bad_request(
            field, f"must be from 1 to {MAX_BAN_MINUTES} minutes, got {value}"
        )
    return value


def _chat_text(check: Any) -> Any:
    def checked(value: Any, field: str) -> str:
        try:
            return check(value)
        except protocol.ProtocolError as exc:
            problem = exc.message.split(": ", 1)[-1]
            raise validation.bad_request(field, problem) from None

    return checked


MESSAGE_FIELDS = (
    validation.Field("text", _chat_text(protocol.message_text), required=True),
    validation.Field("display_name", _chat_text(protocol.display_name)),
)
BAN_FIELDS = (
    validation.Field(
        "viewer_id",
        functools.partial(validation.text, max_length=MAX_VIEWER_ID_LENGTH),
        required=True,
    ),
    validation.Field("duration_minutes", duration_minutes),
    validation.Field(
        "reason",
        functools.partial(validation.optional_text, max_length=MAX_REASON_LENGTH),
    ),
)


def setup_chat(app: web.Application) -> None:
    """Add the chat routes and hub; the hub closes every socket at shutdown."""
    config = app.get(CONFIG)
    limits = ChatLimits()
    if config is not None:
        limits = ChatLimits(
            send_queue_size=config.chat_send_queue_size,
            rate_limit_messages=config.chat_rate_limit_messages,
            rate_limit_seconds=config.chat_rate_limit_seconds,
            history_on_join=config.chat_history_on_join,
        )
    hub = ChatHub(limits)
    app[CHAT_HUB] = hub
    app.router.add_get("/api/streams/{stream_id}/chat", chat_socket)
    app.add_routes(routes)

    async def close_chat(app: web.Application) -> None:
        await hub.close()

    app.on_shutdown.append(close_chat)


async def refresh_rooms(app: web.Application) -> None:
    """Close the rooms whose stream is gone or whose chat was disabled.

    The app and stream handlers call this after a change to settings or a
    deletion, so open rooms follow at once.
    """
    hub = app.get(CHAT_HUB)
    if hub is None:
        return
    for stream_id in hub.stream_ids():
        access = await chat_store.get_chat_access(app[DATABASE], stream_id)
        if access is None:
            hub.close_room(
                stream_id,
                protocol.CLOSE_STREAM_NOT_FOUND,
                protocol.STREAM_NOT_FOUND,
                "the stream was deleted",
            )
            hub.forget(stream_id)
            continue
        settings = protocol.chat_settings(access.app_settings, access.stream_settings)
        if not settings.enabled:
            hub.close_room(
                stream_id,
                protocol.CLOSE_CHAT_DISABLED,
                protocol.CHAT_DISABLED,
                "chat is disabled for this stream (settings.chat_enabled is false)",
            )


def ban_json(ban: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ban["id"],
        "stream_id": ban["stream_id"],
        "viewer_id": ban["viewer_id"],
        "reason": ban["reason"],
        "created_by": ban["created_by"],
        "created_at": ban["created_at"],
        "expires_at": ban["expires_at"],
    }


async def _access(request: web.Request, stream_id: str) -> chat_store.ChatAccess:
    access = await chat_store.get_chat_access(request.app[DATABASE], stream_id)
    if access is None:
        raise ApiError(404, f"stream not found: {stream_id}")
    return access


def _actor(identity: Identity) -> str:
    return identity.key_id if identity.is_api_key else identity.user_id


@routes.get("/api/streams/{stream_id}/chat/messages")
async def list_messages(request: web.Request) -> web.Response:
    identity = await authorize(request, "chat:read")
    stream_id = request.match_info["stream_id"]
    limit = validation.query_int(
        request,
        "limit",
        default=validation.DEFAULT_LIMIT,
        minimum=1,
        maximum=validation.MAX_LIMIT,
    )
    before = validation.query_id(request, "before")
    await find_stream(request, identity, stream_id)
    messages = await chat_store.list_messages(
        request.app[DATABASE], stream_id, limit=limit, before=before
    )
    if messages is None:
        raise validation.bad_request(
            "before", f"no message {before} in the chat of stream {stream_id}"
        )
    return web.json_response([protocol.public_message(item) for item in messages])


@routes.post("/api/streams/{stream_id}/chat/messages")
async def post_message(request: web.Request) -> web.Response:
    identity = await authorize(request, "chat:write")
    stream_id = request.match_info["stream_id"]
    fields = await validation.read_fields(request, MESSAGE_FIELDS)
    await find_stream(request, identity, stream_id)
    access = await _access(request, stream_id)
    settings = protocol.chat_settings(access.app_settings, access.stream_settings)
    if not settings.enabled:
        raise ApiError(
            409, "chat is disabled for this stream (settings.chat_enabled is false)"
        )
    participant = await _rest_participant(request, identity, fields)
    message = await request.app[CHAT_HUB].post(
        request.app[DATABASE],
        access,
        settings,
        participant,
        fields["text"],
        apply_limits=False,
    )
    return web.json_response(protocol.public_message(message), status=201)


async def _rest_participant(
    request: web.Request, identity: Identity, fields: dict[str, Any]
) -> Participant:
    name = fields.get("display_name")
    if identity.is_api_key:
        return Participant(
            viewer_id=identity.key_id or "",
            display_name=name or "Bot",
            role=protocol.BOT,
            user_id=identity.user_id,
            key_id=identity.key_id,
        )
    if name is None:
        user = await user_store.get_user(request.app[DATABASE], identity.user_id)
        full_name = (user or {}).get("full_name") or "Streamer"
        name = protocol.display_name(full_name[: protocol.MAX_DISPLAY_NAME_LENGTH])
    return Participant(
        viewer_id=identity.user_id,
        display_name=name,
        role=protocol.STREAMER,
        user_id=identity.user_id,
    )


@routes.delete("/api/streams/{stream_id}/chat/messages/{message_id}")
@audited("delete_chat_message", "chat_message")
async def delete_message(request: web.Request) -> web.Response:
    identity = await authorize(request, "chat:write")
    stream_id = request.match_info["stream_id"]
    message_id = request.match_info["message_id"]
    stream = await find_stream(request, identity, stream_id)
    set_target(request, message_id, stream["app_id"])
    deleted = await request.app[CHAT_HUB].delete(
        request.app[DATABASE], stream_id, message_id, _actor(identity)
    )
    if not deleted:
        raise ApiError(404, f"chat message not found: {message_id}")
    logger.info(
        "%s deleted chat message %s of stream %s",
        _actor(identity),
        message_id,
        stream_id,
    )
    return web.Response(status=204)


@routes.post("/api/streams/{stream_id}/chat/bans")
@audited("ban_chat_viewer", "chat_ban")
async def create_ban(request: web.Request) -> web.Response:
    identity = await authorize(request, "chat:write")
    stream_id = request.match_info["stream_id"]
    fields = await validation.read_fields(request, BAN_FIELDS)
    stream = await find_stream(request, identity, stream_id)
    now = utc_now()
    minutes = fields.get("duration_minutes")
    ban = await chat_store.upsert_ban(
        request.app[DATABASE],
        stream_id,
        fields["viewer_id"],
        reason=fields.get("reason", ""),
        created_by=_actor(identity),
        now=now,
        expires_at=None if minutes is None else now + timedelta(minutes=minutes),
    )
    set_target(request, ban["id"], stream["app_id"])
    closed = request.app[CHAT_HUB].remove_viewer(
        stream_id, ban["viewer_id"], ban_text(ban)
    )
    logger.info(
        "%s banned viewer %r from the chat of stream %s (%s); closed %d connections",
        _actor(identity),
        ban["viewer_id"],
        stream_id,
        ban["expires_at"] or "permanent",
        closed,
    )
    return web.json_response(ban_json(ban), status=201)


@routes.get("/api/streams/{stream_id}/chat/bans")
async def list_bans(request: web.Request) -> web.Response:
    identity = await authorize(request, "chat:read")
    stream_id = request.match_info["stream_id"]
    await find_stream(request, identity, stream_id)
    bans = await chat_store.list_active_bans(
        request.app[DATABASE], stream_id, utc_now()
    )
    return web.json_response([ban_json(ban) for ban in bans])


@routes.delete("/api/streams/{stream_id}/chat/bans/{ban_id}")
@audited("unban_chat_viewer", "chat_ban")
async def delete_ban(request: web.Request) -> web.Response:
    identity = await authorize(request, "chat:write")
    stream_id = request.match_info["stream_id"]
    ban_id = request.match_info["ban_id"]
    stream = await find_stream(request, identity, stream_id)
    set_target(request, ban_id, stream["app_id"])
    if not await chat_store.delete_ban(request.app[DATABASE], stream_id, ban_id):
        raise ApiError(404, f"chat ban not found: {ban_id}")
    logger.info(
        "%s lifted chat ban %s of stream %s", _actor(identity), ban_id, stream_id
    )
    return web.Response(status=204)
