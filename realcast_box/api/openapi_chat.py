"""The chat part of the OpenAPI document: the WebSocket handshake, history, bans.

OpenAPI cannot describe the frames of a WebSocket, so the handshake's
description points to docs/api.md, which documents them.
"""

from __future__ import annotations

from typing import Any

from realcast_box.api import chat, validation
from realcast_box.api.openapi_paths import (
    CHANGE_ITEM,
    NO_AUTH,
    READ_ITEM,
    READ_LIST,
    WRITE_BODY,
    _operation,
    _path_parameter,
    _query,
    _response,
    scoped,
)
from realcast_box.api.openapi_schemas import _id, _object, _timestamp, schema_ref
from realcast_box.chat import protocol
from realcast_box.hls.playback import MAX_VIEWER_ID_LENGTH

CHAT_TAG = {"name": "chat", "description": "Live chat of a stream."}
ROLES = [protocol.VIEWER, protocol.STREAMER, protocol.BOT]


def _clean_text(max_length: int, description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "description": f"{description} Control characters and surrounding"
        f" whitespace are removed; the rest must be 1 to {max_length}"
        " characters.",
    }


def chat_schemas() -> dict[str, Any]:
    message = _object(
        {
            "id": _id("msg", "Message id."),
            "stream_id": _id("stream", "Stream of the chat."),
            "viewer_id": {
                "type": "string",
                "description": "Sender: a playback token's viewer_id, the"
                " streamer's user id, or a bot's API key id.",
            },
            "display_name": {
                "type": "string",
                "maxLength": protocol.MAX_DISPLAY_NAME_LENGTH,
            },
            "role": {"type": "string", "enum": ROLES},
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": protocol.MAX_TEXT_LENGTH,
                "description": "Plain text; clients must display it as text,"
                " never as HTML.",
            },
            "created_at": _timestamp("When the box stored the message."),
        },
        description="One chat message.",
    )
    ban = _object(
        {
            "id": _id("ban", "Ban id."),
            "stream_id": _id("stream", "Stream of the chat."),
            "viewer_id": {"type": "string"},
            "reason": {"type": "string"},
            "created_by": {
                "type": "string",
                "description": "User id or API key id of the moderator.",
            },
            "created_at": _timestamp("When the ban was made."),
            "expires_at": _timestamp(
                "When the ban ends; null for a permanent ban.", nullable=True
            ),
        },
        description="A viewer banned from a stream's chat.",
    )
    return {
        "ChatMessage": message,
        "ChatMessageCreate": _object(
            {
                "text": _clean_text(protocol.MAX_TEXT_LENGTH, "Message text."),
                "display_name": _clean_text(
                    protocol.MAX_DISPLAY_NAME_LENGTH,
                    "Name shown with the message; defaults to the user's"
                    ' full name, or "Bot" for an API key.',
                ),
            },
            required=("text",),
        ),
        "ChatBan": ban,
        "ChatBanCreate": _object(
            {
                "viewer_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_VIEWER_ID_LENGTH,
                    "description": "viewer_id to ban, as chat messages show it.",
                },
                "duration_minutes": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": chat.MAX_BAN_MINUTES,
                    "description": "Length of the ban; null or absent bans"
                    " permanently.",
                },
                "reason": {
                    "type": ["string", "null"],
                    "maxLength": chat.MAX_REASON_LENGTH,
                },
            },
            required=("viewer_id",),
            description="A ban replaces an earlier ban of the same viewer.",
        ),
    }


def chat_paths() -> dict[str, Any]:
    stream_id = _path_parameter("stream_id", "Stream id.")
    message_list = {"type": "array", "items": schema_ref("ChatMessage")}
    ban_list = {"type": "array", "items": schema_ref("ChatBan")}
    message = _response("The stored message.", schema_ref("ChatMessage"))
    before = _query(
        "before",
        {"type": "string", "minLength": 1, "maxLength": validation.MAX_ID_LENGTH},
        "Only messages older than this message id.",
    )
    limit = _query(
        "limit",
        {
            "type": "integer",
            "minimum": 1,
            "maximum": validation.MAX_LIMIT,
            "default": validation.DEFAULT_LIMIT,
        },
        "Maximum number of messages to return.",
    )
    return {
        "/api/streams/{stream_id}/chat": {
            "parameters": [stream_id],
            "get": _operation(
                "connectChat",
                "chat",
                "Open the chat WebSocket",
                {
                    "101": _response(
                        "Switching to the WebSocket protocol.", rate_limited=False
                    )
                },
                (400, 403, 429),
                security=NO_AUTH,
                description="A WebSocket handshake. Credentials travel in the"
                " `token` query parameter or the join frame, never in cookies;"
                " docs/api.md documents the frames and close codes. 400 for a"
                " request that is not a WebSocket upgrade, 403 for an Origin"
                " that hls_cors_origins does not allow.",
            ),
        },
        "/api/streams/{stream_id}/chat/messages": {
            "parameters": [stream_id],
            "get": _operation(
                "listChatMessages",
                "chat",
                "List chat messages, oldest first",
                {"200": _response("One page of messages.", message_list)},
                READ_LIST,
                security=scoped("chat:read"),
                parameters=[limit, before],
                description="The newest `limit` messages, or those just before"
                " `before`; deleted messages are left out.",
            ),
            "post": _operation(
                "postChatMessage",
                "chat",
                "Send a chat message as the streamer or a bot",
                {"201": message},
                (*WRITE_BODY, 409),
                security=scoped("chat:write"),
                body="ChatMessageCreate",
                description="409 when the stream's chat is disabled.",
            ),
        },
        "/api/streams/{stream_id}/chat/messages/{message_id}": {
            "parameters": [stream_id, _path_parameter("message_id", "Message id.")],
            "delete": _operation(
                "deleteChatMessage",
                "chat",
                "Delete a chat message for everyone",
                {"204": _response("Deleted.")},
                CHANGE_ITEM,
                security=scoped("chat:write"),
            ),
        },
        "/api/streams/{stream_id}/chat/bans": {
            "parameters": [stream_id],
            "post": _operation(
                "createChatBan",
                "chat",
                "Ban a viewer from the chat, and disconnect them",
                {"201": _response("The ban.", schema_ref("ChatBan"))},
                WRITE_BODY,
                security=scoped("chat:write"),
                body="ChatBanCreate",
            ),
            "get": _operation(
                "listChatBans",
                "chat",
                "List the bans in force, newest first",
                {"200": _response("The bans.", ban_list)},
                READ_ITEM,
                security=scoped("chat:read"),
            ),
        },
        "/api/streams/{stream_id}/chat/bans/{ban_id}": {
            "parameters": [stream_id, _path_parameter("ban_id", "Ban id.")],
            "delete": _operation(
                "deleteChatBan",
                "chat",
                "Lift a ban",
                {"204": _response("Lifted.")},
                CHANGE_ITEM,
                security=scoped("chat:write"),
            ),
        },
    }
