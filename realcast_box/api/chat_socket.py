"""The chat WebSocket at /api/streams/{stream_id}/chat: handshake, join, frames.

The handshake only checks that the request is a WebSocket upgrade and that
its ``Origin`` (when sent) is allowed by hls_cors_origins. Every other
problem is reported after the upgrade, with an error frame and a close code,
because a browser cannot read the body of a failed handshake. Credentials come in
the query or the join frame, never in cookies:

- a playback token (``token``) joins as a viewer, whose viewer_id is the
  token's, with a ``display_name`` of the client's choice;
- an access token of the stream's owner joins as the streamer;
- an API key of the stream's app with chat:write (``api_key`` and
  ``api_secret`` in the join frame, or the Authorization header) joins as a
  bot; the streamer and bots are moderators;
- without credentials, a client of a public stream whose settings allow it
  (``chat_allow_anonymous``) joins read-only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import WSMsgType, web

from realcast_box.api.audit import record_security_event, submit
from realcast_box.api.client_address import client_ip
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import (
    AccessDenied,
    Identity,
    authenticate,
    authenticate_access_token,
    authenticate_api_key_secret,
    require_scope,
)
from realcast_box.api.playback import playback_secret
from realcast_box.appkeys import CONFIG, DATABASE
from realcast_box.chat import protocol
from realcast_box.chat.hub import (
    ChatHub,
    Connection,
    Participant,
    RateLimitedSend,
)
from realcast_box.chat.protocol import ChatSettings, ProtocolError
from realcast_box.hls import playback
from realcast_box.hls.cors import HLS_CORS, parse_cors_origins
from realcast_box.store import chat as chat_store
from realcast_box.store import users as user_store
from realcast_box.store.audit import AuditEntry
from realcast_box.store.ids import utc_now

logger = logging.getLogger(__name__)

CHAT_HUB = web.AppKey("chat_hub", ChatHub)
ANONYMOUS_ID_BYTES = 8
# Kernel send buffer of a chat socket (Linux doubles the value). A fixed
# size turns off send-buffer autotuning, which would let one stalled client
# hold megabytes before its send queue fills and the hub drops it.
CHAT_SEND_BUFFER_BYTES = 64 * 1024
DEFAULT_BOT_NAME = "Bot"


class JoinRejected(Exception):
    """A join that fails: the error frame's code and message, and the close code."""

    def __init__(self, close_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Joined:
    access: chat_store.ChatAccess
    settings: ChatSettings
    participant: Participant


def check_origin(request: web.Request) -> None:
    """Raise a 403 unless the handshake's Origin is the box's or allowed.

    Allowed origins are those of hls_cors_origins. Clients that send no
    Origin (bots, native apps) pass: only browsers send it, and the check
    keeps other sites' pages from joining on a viewer's behalf.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return
    # The box's own pages (the admin UI at /) are same-origin: a browser
    # sends the Host it connected to, and a page of another site cannot
    # make the two match.
    if origin.lower() == f"{request.scheme}://{request.host}".lower():
        return
    policy = request.app.get(HLS_CORS)
    if policy is None:
        policy = parse_cors_origins(request.app[CONFIG].hls_cors_origins)
    if policy.origins is None or origin.lower() in policy.origins:
        return
    raise ApiError(
        403,
        f"origin {origin!r} may not open the chat WebSocket: add it to the"
        " hls_cors_origins setting",
    )


async def chat_socket(request: web.Request) -> web.StreamResponse:
    stream_id = request.match_info["stream_id"]
    config = request.app[CONFIG]
    ws = web.WebSocketResponse(
        heartbeat=config.chat_heartbeat_seconds,
        max_msg_size=protocol.MAX_FRAME_BYTES,
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(
            400,
            "expected a WebSocket upgrade: open this URL with a WebSocket client"
            " (ws:// or wss://)",
        )
    check_origin(request)
    _limit_send_buffer(request)
    await ws.prepare(request)
    label = f"{stream_id} {client_ip(request)}"
    try:
        async with asyncio.timeout(config.chat_join_timeout_seconds):
            join = await _receive_join(ws)
        if join is None:
            return ws
        joined = await _admit(request, stream_id, join)
    except TimeoutError:
        await _reject(
            ws,
            JoinRejected(
                protocol.CLOSE_JOIN_TIMEOUT,
                protocol.JOIN_TIMEOUT,
                f"no join frame within {config.chat_join_timeout_seconds:g} s",
            ),
        )
        return ws
    except JoinRejected as exc:
        logger.info("chat %s: join rejected: %s", label, exc.message)
        await _reject(ws, exc)
        return ws

    participant = joined.participant
    label = f"{label} {participant.role} {participant.viewer_id!r}"
    hub = request.app[CHAT_HUB]
    transport = request.transport
    connection = await hub.join(
        request.app[DATABASE],
        stream_id,
        ws,
        participant,
        _welcome(request, joined),
        transport.abort if transport is not None else lambda: None,
        label,
    )
    logger.info("chat %s: joined", label)
    try:
        await _read_frames(request, ws, connection, joined)
    finally:
        await hub.leave(stream_id, connection)
        logger.info("chat %s: left (close code %s)", label, ws.close_code)
    return ws


def _limit_send_buffer(request: web.Request) -> None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHAT_SEND_BUFFER_BYTES)
    except OSError as exc:
        logger.debug("cannot set SO_SNDBUF of a chat socket: %s", exc)


async def _receive_join(ws: web.WebSocketResponse) -> dict[str, Any] | None:
    """Return the join frame, or None when the client closed first."""
    message = await ws.receive()
    if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
        return None
    if message.type is not WSMsgType.TEXT:
        raise JoinRejected(
            protocol.CLOSE_INVALID_JOIN,
            protocol.INVALID_JOIN,
            "the first frame must be a JSON text frame of type join",
        )
    try:
        frame = protocol.parse_frame(message.data)
    except ProtocolError as exc:
        raise JoinRejected(
            protocol.CLOSE_INVALID_JOIN, protocol.INVALID_JOIN, exc.message
        ) from None
    if frame["type"] != "join":
        raise JoinRejected(
            protocol.CLOSE_INVALID_JOIN,
            protocol.INVALID_JOIN,
            f"the first frame must be of type join, got {frame['type']!r}",
        )
    return frame


async def _reject(ws: web.WebSocketResponse, exc: JoinRejected) -> None:
    try:
        await ws.send_str(protocol.encode(protocol.error_frame(exc.code, exc.message)))
        await ws.close(code=exc.close_code, message=exc.code.encode())
    except (ConnectionError, RuntimeError):
        pass


async def _admit(request: web.Request, stream_id: str, join: dict[str, Any]) -> Joined:
    database = request.app[DATABASE]
    access = await chat_store.get_chat_access(database, stream_id)
    if access is None:
        raise JoinRejected(
            protocol.CLOSE_STREAM_NOT_FOUND,
            protocol.STREAM_NOT_FOUND,
            f"stream not found: {stream_id}",
        )
    settings = protocol.chat_settings(access.app_settings, access.stream_settings)
    if not settings.enabled:
        raise disabled_rejection()
    try:
        participant = await _identify(request, access, settings, join)
    except ProtocolError as exc:
        raise JoinRejected(
            protocol.CLOSE_INVALID_JOIN, protocol.INVALID_JOIN, exc.message
        ) from None
    # NOTE: a ban stored between this check and the connection's entry into
    # the room does not close that connection; the viewer's next join fails.
    if participant.role != protocol.STREAMER:
        ban = await chat_store.get_active_ban(
            database, stream_id, participant.viewer_id, utc_now()
        )
        if ban is not None:
            raise JoinRejected(protocol.CLOSE_BANNED, protocol.BANNED, ban_text(ban))
    return Joined(access, settings, participant)


def disabled_rejection() -> JoinRejected:
    return JoinRejected(
        protocol.CLOSE_CHAT_DISABLED,
        protocol.CHAT_DISABLED,
        "chat is disabled for this stream (settings.chat_enabled is false)",
    )


def ban_text(ban: dict[str, Any]) -> str:
    until = ban["expires_at"]
    return f"banned from this chat {'until ' + until if until else 'permanently'}"


async def _identify(
    request: web.Request,
    access: chat_store.ChatAccess,
    settings: ChatSettings,
    join: dict[str, Any],
) -> Participant:
    """Return the participant that the join's credentials name.

    Raises JoinRejected for invalid credentials and ProtocolError for an
    invalid field.
    """
    token = join.get("token", request.query.get("token"))
    name = join.get("display_name", request.query.get("display_name"))
    if "api_key" in join or "api_secret" in join:
        api_key, api_secret = join.get("api_key"), join.get("api_secret")
        if not isinstance(api_key, str) or not isinstance(api_secret, str):
            raise ProtocolError(
                protocol.INVALID_JOIN, "api_key and api_secret must both be strings"
            )
        identity = await _checked(
            request, authenticate_api_key_secret(request, api_key, api_secret)
        )
        return await _moderator(request, access, identity, name)
    if token is not None:
        if not isinstance(token, str):
            raise ProtocolError(protocol.INVALID_JOIN, "token must be a string")
        if not token:
            raise ProtocolError(
                protocol.INVALID_JOIN,
                "token is empty: send the playback_token of POST "
                "/api/streams/{stream_id}/playback-token, or an access token",
            )
        if _is_playback_token(token):
            return _viewer(request, access, token, name)
        identity = await _checked(request, authenticate_access_token(request, token))
        return await _moderator(request, access, identity, name)
    if "Authorization" in request.headers:
        identity = await _checked(request, authenticate(request))
        return await _moderator(request, access, identity, name)
    return _anonymous(access, settings)


def _is_playback_token(token: str) -> bool:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return False
    return claims.get("aud") == playback.PLAYBACK_TOKEN_AUDIENCE


async def _checked(request: web.Request, pending: Any) -> Identity:
    """Await an authentication; turn its 401 or 403 into a JoinRejected."""
    try:
        return await pending
    except AccessDenied as exc:
        await _record_denial(request, exc)
        raise _rejection(exc) from None
    except ApiError as exc:
        raise _rejection(exc) from None


def _rejection(exc: ApiError) -> JoinRejected:
    if exc.status == 403:
        return JoinRejected(protocol.CLOSE_FORBIDDEN, protocol.FORBIDDEN, exc.detail)
    return JoinRejected(protocol.CLOSE_UNAUTHORIZED, protocol.UNAUTHORIZED, exc.detail)


async def _record_denial(request: web.Request, exc: AccessDenied) -> None:
    await record_security_event(
        request.app,
        request,
        exc.event_type,
        f"{exc.detail} (chat join {request.path})",
        exc.user_id,
        exc.app_id,
        api_key_id=exc.key_id,
    )


async def _moderator(
    request: web.Request,
    access: chat_store.ChatAccess,
    identity: Identity,
    name: Any,
) -> Participant:
    if identity.is_api_key:
        if identity.app_id != access.app_id:
            raise JoinRejected(
                protocol.CLOSE_STREAM_NOT_FOUND,
                protocol.STREAM_NOT_FOUND,
                f"stream not found: {access.stream_id}",
            )
        try:
            require_scope(identity, "chat:write")
        except AccessDenied as exc:
            await _record_denial(request, exc)
            raise _rejection(exc) from None
        display = protocol.display_name(name) if name is not None else None
        return Participant(
            viewer_id=identity.key_id or "",
            display_name=display or DEFAULT_BOT_NAME,
            role=protocol.BOT,
            user_id=identity.user_id,
            key_id=identity.key_id,
        )
    if identity.user_id != access.user_id:
        raise JoinRejected(
            protocol.CLOSE_FORBIDDEN,
            protocol.FORBIDDEN,
            "an access token joins only the chats of your own streams; viewers"
            " join with a playback token",
        )
    display = protocol.display_name(name) if name is not None else None
    if display is None:
        user = await user_store.get_user(request.app[DATABASE], identity.user_id)
        full_name = (user or {}).get("full_name") or "Streamer"
        display = protocol.display_name(full_name[: protocol.MAX_DISPLAY_NAME_LENGTH])
    return Participant(
        viewer_id=identity.user_id,
        display_name=display,
        role=protocol.STREAMER,
        user_id=identity.user_id,
    )


def _viewer(
    request: web.Request, access: chat_store.ChatAccess, token: str, name: Any
) -> Participant:
    try:
        claims = playback.decode_playback_token(
            token,
            playback_secret(request.app),
            stream_id=access.stream_id,
            generation=access.generation,
            leeway=request.app[CONFIG].playback_clock_leeway,
        )
    except playback.InvalidPlayback as exc:
        raise JoinRejected(
            protocol.CLOSE_UNAUTHORIZED, protocol.UNAUTHORIZED, str(exc)
        ) from None
    if name is None:
        raise ProtocolError(
            protocol.INVALID_JOIN,
            "display_name: missing; viewers must choose a display name",
        )
    return Participant(
        viewer_id=claims.viewer_id,
        display_name=protocol.display_name(name),
        role=protocol.VIEWER,
    )


def _anonymous(access: chat_store.ChatAccess, settings: ChatSettings) -> Participant:
    policy = playback.effective_policy(access.app_settings, access.stream_settings)
    if policy == playback.SIGNED:
        raise JoinRejected(
            protocol.CLOSE_UNAUTHORIZED,
            protocol.UNAUTHORIZED,
            f"missing playback token: stream {access.stream_id} is signed; send"
            " the token from POST /api/streams/{stream_id}/playback-token as"
            " token",
        )
    if not settings.allow_anonymous:
        raise JoinRejected(
            protocol.CLOSE_UNAUTHORIZED,
            protocol.UNAUTHORIZED,
            "missing credentials: send a playback token as token (anonymous"
            " read-only joining is off; settings.chat_allow_anonymous enables it)",
        )
    return Participant(
        viewer_id=f"anon_{secrets.token_hex(ANONYMOUS_ID_BYTES)}",
        display_name="",
        role=protocol.ANONYMOUS,
    )


def _welcome(request: web.Request, joined: Joined) -> dict[str, Any]:
    limits = request.app[CHAT_HUB].limits
    participant = joined.participant
    return {
        "type": "welcome",
        "stream_id": joined.access.stream_id,
        "viewer_id": participant.viewer_id,
        "display_name": participant.display_name,
        "role": participant.role,
        "can_send": participant.can_send,
        "slow_mode_seconds": joined.settings.slow_mode_seconds,
        "max_text_length": protocol.MAX_TEXT_LENGTH,
        "rate_limit": {
            "messages": limits.rate_limit_messages,
            "seconds": limits.rate_limit_seconds,
        },
    }


async def _read_frames(
    request: web.Request,
    ws: web.WebSocketResponse,
    connection: Connection,
    joined: Joined,
) -> None:
    async for message in ws:
        if connection.closing:
            continue
        if message.type is not WSMsgType.TEXT:
            _send_error(
                connection,
                protocol.INVALID_FRAME,
                "binary frames are not supported: send JSON text frames",
            )
            continue
        try:
            frame = protocol.parse_frame(message.data)
            await _handle_frame(request, connection, joined, frame)
        except RateLimitedSend as exc:
            _send_error(connection, exc.code, exc.message, retry_after=exc.retry_after)
        except ProtocolError as exc:
            _send_error(connection, exc.code, exc.message)


def _send_error(connection: Connection, code: str, message: str, **fields: Any) -> None:
    connection.offer(protocol.encode(protocol.error_frame(code, message, **fields)))


async def _handle_frame(
    request: web.Request,
    connection: Connection,
    joined: Joined,
    frame: dict[str, Any],
) -> None:
    kind = frame["type"]
    if kind == "send":
        await _send_message(request, connection, joined, frame)
    elif kind == "delete":
        await _delete_message(request, connection, joined, frame)
    elif kind == "ping":
        connection.offer(protocol.encode({"type": "pong"}))
    elif kind == "join":
        raise ProtocolError(protocol.INVALID_FRAME, "already joined")
    else:
        raise ProtocolError(
            protocol.INVALID_FRAME,
            f"unknown frame type {kind!r}: expected send, delete or ping",
        )


async def _send_message(
    request: web.Request,
    connection: Connection,
    joined: Joined,
    frame: dict[str, Any],
) -> None:
    participant = connection.participant
    if not participant.can_send:
        raise ProtocolError(
            protocol.READ_ONLY,
            "anonymous viewers can only read: join with a playback token to send",
        )
    text = protocol.message_text(frame.get("text"))
    database = request.app[DATABASE]
    # Settings are read again for each message, so a change to slow mode or
    # chat_enabled applies at once.
    access = await chat_store.get_chat_access(database, joined.access.stream_id)
    hub = request.app[CHAT_HUB]
    if access is None:
        hub.close_room(
            joined.access.stream_id,
            protocol.CLOSE_STREAM_NOT_FOUND,
            protocol.STREAM_NOT_FOUND,
            "the stream was deleted",
        )
        return
    settings = protocol.chat_settings(access.app_settings, access.stream_settings)
    if not settings.enabled:
        rejection = disabled_rejection()
        hub.close_room(
            access.stream_id, rejection.close_code, rejection.code, rejection.message
        )
        return
    await hub.post(database, access, settings, participant, text)


async def _delete_message(
    request: web.Request,
    connection: Connection,
    joined: Joined,
    frame: dict[str, Any],
) -> None:
    participant = connection.participant
    if not participant.is_moderator:
        raise ProtocolError(
            protocol.FORBIDDEN, "only the streamer and bots may delete messages"
        )
    message_id = frame.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise ProtocolError(protocol.INVALID_FRAME, "message_id: must be a string")
    stream_id = joined.access.stream_id
    deleted = await request.app[CHAT_HUB].delete(
        request.app[DATABASE], stream_id, message_id, participant.viewer_id
    )
    if not deleted:
        raise ProtocolError(
            protocol.MESSAGE_NOT_FOUND, f"chat message not found: {message_id}"
        )
    submit(
        request.app,
        AuditEntry(
            action="delete_chat_message",
            user_id=joined.access.user_id,
            app_id=joined.access.app_id,
            api_key_id=participant.key_id,
            resource_type="chat_message",
            resource_id=message_id,
            ip_address=client_ip(request),
            detail=f"deleted over the chat WebSocket of stream {stream_id}",
        ),
    )
