"""The chat's JSON frames, close codes and text rules, without any I/O.

Every frame is a JSON object with a ``type``. Clients send ``join`` (first),
``send`` and ``delete``; the box sends ``welcome``, ``history``,
``message``, ``deleted``, ``notice`` and ``error``. docs/api.md documents
each frame.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from realcast_box.errors import RealcastError

MAX_TEXT_LENGTH = 500
MAX_DISPLAY_NAME_LENGTH = 32
# Frames larger than this close the connection with 1009 (message too big).
MAX_FRAME_BYTES = 16 * 1024

# Roles of a chat participant.
VIEWER = "viewer"  # a playback token's viewer
ANONYMOUS = "anonymous"  # read-only, on a public stream whose app allows it
STREAMER = "streamer"  # the user who owns the stream's app
BOT = "bot"  # an API key of the stream's app with chat:write
MODERATOR_ROLES = frozenset({STREAMER, BOT})

# WebSocket close codes of the private range 4000-4999.
CLOSE_INVALID_JOIN = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_STREAM_NOT_FOUND = 4404
CLOSE_JOIN_TIMEOUT = 4408
CLOSE_CHAT_DISABLED = 4410
CLOSE_BANNED = 4413
CLOSE_SLOW_CLIENT = 4420

# Codes of error frames.
INVALID_FRAME = "invalid_frame"
INVALID_JOIN = "invalid_join"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
STREAM_NOT_FOUND = "stream_not_found"
JOIN_TIMEOUT = "join_timeout"
CHAT_DISABLED = "chat_disabled"
BANNED = "banned"
SLOW_CLIENT = "slow_client"
READ_ONLY = "read_only"
INVALID_TEXT = "invalid_text"
RATE_LIMITED = "rate_limited"
SLOW_MODE = "slow_mode"
MESSAGE_NOT_FOUND = "message_not_found"

# Bidirectional embedding, override and isolate characters, which make text
# display in another order than it is stored.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class ProtocolError(RealcastError):
    """A client frame or value that the box rejects, with an error frame code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def clean_text(value: Any, field: str, max_length: int) -> str:
    """Return ``value`` without control characters and surrounding whitespace.

    Removes C0 and C1 controls (newlines and tabs too), lone surrogates and
    bidirectional formatting characters. Raises ProtocolError when the
    result is empty or longer than ``max_length`` characters.
    """
    if not isinstance(value, str):
        raise ProtocolError(INVALID_TEXT, f"{field}: must be a string")
    kept = "".join(
        char
        for char in value
        if unicodedata.category(char) not in ("Cc", "Cs") and char not in _BIDI_CONTROLS
    ).strip()
    if not kept:
        raise ProtocolError(INVALID_TEXT, f"{field}: must not be empty")
    if len(kept) > max_length:
        raise ProtocolError(
            INVALID_TEXT,
            f"{field}: must be at most {max_length} characters, got {len(kept)}",
        )
    return kept


def message_text(value: Any) -> str:
    return clean_text(value, "text", MAX_TEXT_LENGTH)


def display_name(value: Any) -> str:
    return clean_text(value, "display_name", MAX_DISPLAY_NAME_LENGTH)


def parse_frame(data: str) -> dict[str, Any]:
    """Parse one client frame: a JSON object with a string ``type``."""
    try:
        frame = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(INVALID_FRAME, f"frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError(
            INVALID_FRAME, 'frame must be a JSON object with a string "type"'
        )
    return frame


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


def error_frame(code: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **fields}


def message_frame(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "message": public_message(message)}


def public_message(message: dict[str, Any]) -> dict[str, Any]:
    """Return a stored message as clients see it."""
    return {
        "id": message["id"],
        "stream_id": message["stream_id"],
        "viewer_id": message["viewer_id"],
        "display_name": message["display_name"],
        "role": message["role"],
        "text": message["text"],
        "created_at": message["created_at"],
    }


@dataclass(frozen=True)
class ChatSettings:
    """The chat settings of one stream, from its own settings or its app's."""

    enabled: bool = True
    slow_mode_seconds: int = 0
    allow_anonymous: bool = False


def _setting(name: str, *settings: Any) -> Any:
    for source in settings:
        if isinstance(source, dict) and name in source:
            return source[name]
    return None


def chat_settings(app_settings: Any, stream_settings: Any) -> ChatSettings:
    """Return the stream's chat settings: its own keys win over its app's."""
    enabled = _setting("chat_enabled", stream_settings, app_settings)
    slow = _setting("chat_slow_mode_seconds", stream_settings, app_settings)
    anonymous = _setting("chat_allow_anonymous", stream_settings, app_settings)
    return ChatSettings(
        enabled=enabled if isinstance(enabled, bool) else True,
        slow_mode_seconds=slow if isinstance(slow, int) and slow > 0 else 0,
        allow_anonymous=anonymous is True,
    )
