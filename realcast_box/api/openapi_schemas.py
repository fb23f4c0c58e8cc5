"""Components of the OpenAPI document: schemas, shared responses and headers.

The limits come from the constants that the handlers check (validation.py,
the scope list in store.api_keys, audit.MAX_USER_AGENT_LENGTH), so the
document changes with the code. Where JSON Schema cannot state a check, such
as "not blank once surrounding whitespace is removed" or "a time in the
future", the schema is an approximation and the field's description states
the rule.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from realcast_box.api import profiles, validation
from realcast_box.api.audit import MAX_USER_AGENT_LENGTH, RTMP_INVALID_STREAM_KEY
from realcast_box.api.identity import (
    EXPIRED_API_KEY,
    EXPIRED_TOKEN,
    INVALID_API_KEY,
    INVALID_TOKEN,
    PERMISSION_DENIED,
    SCOPE_DENIED,
)
from realcast_box.hls import playback
from realcast_box.hls.viewers import ViewerStats
from realcast_box.live.health import IngestReport, IngestWarning
from realcast_box.live.ladder import RenditionStatus
from realcast_box.media.encoders import EncoderStatus
from realcast_box.store.api_keys import SCOPES

JSON = "application/json"

# Values of an audit entry's "action": the audited calls, then the security
# event types. The list is documentation, not an enum, because
# audit.record_security_event records any event type that a caller passes.
AUDIT_ACTIONS = (
    "register",
    "login",
    "create_app",
    "update_app",
    "delete_app",
    "create_stream",
    "update_stream",
    "delete_stream",
    "reset_stream_key",
    "create_transcoding_profile",
    "update_transcoding_profile",
    "delete_transcoding_profile",
    "create_api_key",
    "regenerate_api_key",
    "delete_api_key",
    "revoke_playback_tokens",
    "create_webhook",
    "update_webhook",
    "delete_webhook",
    "redeliver_webhook_delivery",
    "delete_chat_message",
    "ban_chat_viewer",
    "unban_chat_viewer",
    "test_webhook",
    "start_recording",
    "stop_recording",
    "update_recording",
    "delete_recording",
    "login_failed",
    INVALID_TOKEN,
    EXPIRED_TOKEN,
    INVALID_API_KEY,
    EXPIRED_API_KEY,
    SCOPE_DENIED,
    PERMISSION_DENIED,
    RTMP_INVALID_STREAM_KEY,
    "rate_limit_exceeded",
    "webhook_disabled",
)
STREAM_STATUSES = ("created", "live", "reconnecting", "offline")

# Status code -> (name in components.responses, description).
ERROR_RESPONSES = {
    400: ("BadRequest", "Invalid request: the detail starts with the field at fault."),
    401: ("Unauthorized", "Missing or invalid credentials."),
    403: ("Forbidden", "The API key lacks the scope, or the call needs a user."),
    404: ("NotFound", "No such route, or no such resource that the caller can see."),
    405: ("MethodNotAllowed", "Method not allowed on this path."),
    409: ("Conflict", "The resource already exists, or is in use."),
    413: ("PayloadTooLarge", "Request body over 1 MiB."),
    429: ("TooManyRequests", "Rate limit exceeded."),
    500: ("InternalError", "Unexpected failure. The box logs the cause."),
}


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_ref(name: str) -> dict[str, str]:
    return ref("schemas", name)


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _id(prefix: str, description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": f"^{prefix}_[0-9a-f]{{16}}$",
        "description": description,
        "examples": [f"{prefix}_d6816caa88ce29b3"],
    }


def _timestamp(description: str, *, nullable: bool = False) -> dict[str, Any]:
    return {
        "type": ["string", "null"] if nullable else "string",
        "format": "date-time",
        "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
        "description": description,
    }


def _object(
    properties: dict[str, Any],
    *,
    required: tuple[str, ...] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Return an object schema without extra members; all are required by default."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def text_field(max_length: int, description: str) -> dict[str, Any]:
    """Return the schema of a required text field, checked by validation.text."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": r"\S",
        "description": f"{description} Surrounding whitespace is removed, and the"
        f" rest must not be empty and at most {max_length} characters long.",
    }


def optional_text_field(max_length: int, description: str) -> dict[str, Any]:
    return {
        "type": ["string", "null"],
        "maxLength": max_length,
        "description": f"{description} At most {max_length} characters; null"
        ' or absent means "".',
    }


SETTINGS = {
    "type": "object",
    "properties": {
        "playback_policy": {
            "type": "string",
            "enum": list(playback.PLAYBACK_POLICIES),
            "description": "signed: HLS playback needs a playback token. A"
            " stream without it follows its app's, else public.",
        },
        "max_bitrate_kbps": {
            "description": "Ingest bitrate above which the stream status"
            " warns; a value that is not a positive number counts as unset.",
        },
        "chat_enabled": {
            "type": "boolean",
            "description": "false closes the chat; a stream without it follows"
            " its app's, else true.",
        },
        "chat_slow_mode_seconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": validation.MAX_SLOW_MODE_SECONDS,
            "description": "Seconds a viewer waits between chat messages; 0 is off.",
        },
        "chat_allow_anonymous": {
            "type": "boolean",
            "description": "true lets clients without credentials read the chat"
            " of a public stream.",
        },
    },
    "description": "A JSON object, stored and returned as given. The box reads"
    " the members listed here.",
}
STREAM_SETTINGS = {
    **SETTINGS,
    "properties": {
        **SETTINGS["properties"],
        "transcoding_profile_id": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": validation.MAX_ID_LENGTH,
            "description": "A transcoding profile of the stream's app, whose"
            " ladder the stream gets; null or absent for passthrough. The box"
            " does not build the ladder yet.",
        },
    },
}
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def dataclass_object(cls: type, description: str) -> dict[str, Any]:
    """Return the schema of ``dataclasses.asdict`` of ``cls``, from its type hints.

    Handles fields typed str, int, float or bool, optionally ``| None``.
    """
    hints = typing.get_type_hints(cls)
    properties = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        members = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        kinds = [
            JSON_TYPES[member] for member in members or (hint,) if member in JSON_TYPES
        ]
        if type(None) in members:
            kinds.append("null")
        properties[field.name] = {"type": kinds[0] if len(kinds) == 1 else kinds}
    return _object(properties, description=description)


def _user_schemas() -> dict[str, Any]:
    user_id = _id("user", "User id.")
    email = {"type": "string", "description": "Email address."}
    full_name = {"type": "string", "description": 'Full name, "" if none.'}
    return {
        "User": _object(
            {
                "id": user_id,
                "email": email,
                "full_name": full_name,
                "created_at": _timestamp("Time of registration."),
            }
        ),
        "LoginUser": _object(
            {"id": user_id, "email": email, "full_name": full_name},
            description="The user who logged in.",
        ),
        "Login": _object(
            {
                "access_token": {
                    "type": "string",
                    "description": "HS256 JWT to send as 'Authorization: Bearer'.",
                },
                "token_type": {"type": "string", "const": "bearer"},
                "user": schema_ref("LoginUser"),
            }
        ),
        "RegisterRequest": _object(
            {
                "email": {
                    "type": "string",
                    "maxLength": validation.MAX_EMAIL_LENGTH,
                    "pattern": "^" + validation.EMAIL_PATTERN.pattern + "$",
                    "description": "Email address: one @, no spaces or control"
                    " characters, a domain with a dot. Compared case-insensitively"
                    " with registered ones.",
                },
                "password": {
                    "type": "string",
                    "minLength": validation.MIN_PASSWORD_LENGTH,
                    "maxLength": validation.MAX_PASSWORD_LENGTH,
                    "description": "Password, kept as given, spaces included.",
                },
                "full_name": optional_text_field(
                    validation.MAX_NAME_LENGTH, "Full name."
                ),
            },
            required=("email", "password"),
        ),
        "LoginRequest": _object(
            {
                "email": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": validation.MAX_EMAIL_LENGTH,
                    "pattern": r"\S",
                },
                "password": {
                    "type": "string",
                    "maxLength": validation.MAX_PASSWORD_LENGTH,
                },
            }
        ),
    }


def _app_schemas() -> dict[str, Any]:
    name = text_field(validation.MAX_NAME_LENGTH, "App name.")
    description = optional_text_field(validation.MAX_DESCRIPTION_LENGTH, "Description.")
    return {
        "App": _object(
            {
                "id": _id("app", "App id."),
                "name": {"type": "string"},
                "description": {"type": "string"},
                "user_id": _id("user", "Owner of the app."),
                "settings": SETTINGS,
                "created_at": _timestamp("Time of creation."),
            }
        ),
        "AppCreate": _object(
            {"name": name, "description": description, "settings": SETTINGS},
            required=("name",),
        ),
        "AppUpdate": _object(
            {"name": name, "description": description, "settings": SETTINGS},
            required=(),
            description="Fields to change; absent ones keep their value.",
        ),
    }


def _stream_schemas() -> dict[str, Any]:
    title = text_field(validation.MAX_NAME_LENGTH, "Stream title.")
    description = optional_text_field(validation.MAX_DESCRIPTION_LENGTH, "Description.")
    status = {
        "type": "string",
        "enum": list(STREAM_STATUSES),
        "description": "created until the first publish, live while a publisher"
        " is connected, reconnecting while the session waits for a dropped"
        " publisher, offline after the session ends.",
    }
    return {
        "Stream": _object(
            {
                "id": _id("stream", "Stream id."),
                "app_id": _id("app", "App of the stream."),
                "title": {"type": "string"},
                "description": {"type": "string"},
                "settings": STREAM_SETTINGS,
                "stream_key": {
                    "type": "string",
                    "description": "Secret key that a publisher appends to rtmp_url.",
                },
                "rtmp_url": {
                    "type": "string",
                    "pattern": "^rtmps?://",
                    "description": "Server URL for OBS: rtmps:// when the box has a"
                    " TLS certificate, else rtmp://.",
                },
                "plain_rtmp_url": {
                    "type": "string",
                    "pattern": "^rtmp://",
                    "description": "Unencrypted RTMP URL, for encoders without"
                    " RTMPS; present only when rtmp_url is an rtmps:// URL.",
                },
                "hls_url": {
                    "type": "string",
                    "pattern": r"^https?://.*/index\.m3u8$",
                    "description": "Multivariant playlist, over HTTPS when the"
                    " request came over HTTPS.",
                },
                "status": status,
                "created_at": _timestamp("Time of creation."),
                "started_at": _timestamp(
                    "Start of the last publishing session.", nullable=True
                ),
                "ended_at": _timestamp(
                    "End of the last publishing session.", nullable=True
                ),
            },
            required=(
                "id",
                "app_id",
                "title",
                "description",
                "settings",
                "stream_key",
                "rtmp_url",
                "hls_url",
                "status",
                "created_at",
                "started_at",
                "ended_at",
            ),
        ),
        "StreamCreate": _object(
            {
                "app_id": text_field(validation.MAX_ID_LENGTH, "App of the stream."),
                "title": title,
                "description": description,
                "settings": STREAM_SETTINGS,
            },
            required=("app_id", "title"),
        ),
        "StreamUpdate": _object(
            {"title": title, "description": description, "settings": STREAM_SETTINGS},
            required=(),
            description="Fields to change; absent ones keep their value.",
        ),
        "StreamStatus": _object(
            {
                "stream_id": _id("stream", "Stream id."),
                "status": status,
                **{
                    field.name: {"type": "integer", "minimum": 0}
                    for field in dataclasses.fields(ViewerStats)
                },
                "started_at": _timestamp(
                    "Start of the last publishing session.", nullable=True
                ),
                "duration_seconds": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Seconds of the current session while live,"
                    " else of the last one.",
                },
                "ingest": {
                    "anyOf": [schema_ref("IngestReport"), {"type": "null"}],
                    "description": "The connected publisher's feed; null while"
                    " none is connected.",
                },
                "ingest_warnings": {
                    "type": "array",
                    "items": schema_ref("IngestWarning"),
                },
                "renditions": {
                    "type": "array",
                    "items": schema_ref("RenditionStatus"),
                    "description": "Each quality of the stream's transcoding"
                    " profile in the current session; empty without a profile"
                    " or while offline.",
                },
            }
        ),
        "RenditionStatus": dataclass_object(
            RenditionStatus,
            "One quality of the ladder: state is starting, active, restarting"
            " (its hardware encoder failed and it resumes on libx264), shed (the"
            " box could not keep up), failed or dropped (it would need"
            " upscaling); reason says why. speed is media seconds encoded per"
            " second.",
        ),
        "IngestReport": dataclass_object(
            IngestReport,
            "What the box measured in the publisher's feed; null values are not"
            " measured yet.",
        ),
        "IngestWarning": dataclass_object(
            IngestWarning, "A problem of the feed, such as a bitrate over the limit."
        ),
        **_playback_schemas(),
    }


def _playback_schemas() -> dict[str, Any]:
    return {
        "PlaybackTokenRequest": _object(
            {
                "viewer_id": text_field(
                    playback.MAX_VIEWER_ID_LENGTH, "Viewer the token is for."
                ),
                "expiry_minutes": {
                    "type": "integer",
                    "minimum": playback.MIN_EXPIRY_MINUTES,
                    "maximum": playback.MAX_EXPIRY_MINUTES,
                    "default": playback.DEFAULT_EXPIRY_MINUTES,
                    "description": "Minutes until a player can no longer start"
                    " with the token.",
                },
            },
            required=("viewer_id",),
        ),
        "PlaybackToken": _object(
            {
                "playback_token": {"type": "string"},
                "playback_url": {
                    "type": "string",
                    "description": "hls_url with the token as its"
                    f" {playback.TOKEN_PARAMETER} query parameter.",
                },
                "expires_at": _timestamp("End of the token's lifetime."),
            }
        ),
        "PlaybackRevocation": _object(
            {
                "stream_id": _id("stream", "Stream id."),
                "revoked_at": _timestamp(
                    "Tokens issued up to this time no longer start playback."
                ),
            }
        ),
    }


def _key_schemas() -> dict[str, Any]:
    scopes = {
        "type": "array",
        "items": {"type": "string", "enum": list(SCOPES)},
        "description": "Scopes in the order of the scope list, without duplicates.",
    }
    key_fields = {
        "id": _id("key", "API key id."),
        "app_id": _id("app", "The only app that the key reaches."),
        "name": {"type": "string"},
        "api_key": {
            "type": "string",
            "pattern": "^rck_live_[0-9a-f]{32}$",
            "description": "User name of the key's Basic credentials.",
        },
        "scopes": scopes,
        "created_at": _timestamp("Time of creation."),
        "expires_at": _timestamp(
            "From this time on the key gets 401; null if it never expires.",
            nullable=True,
        ),
        "last_used_at": _timestamp(
            "Last request the key authenticated, written at most once a minute.",
            nullable=True,
        ),
    }
    secret = {
        "type": "string",
        "pattern": "^rcs_live_[A-Za-z0-9_-]{43}$",
        "description": "Password of the key's Basic credentials. Returned by"
        " create and regenerate only: the box keeps an HMAC of it.",
    }
    return {
        "ApiKey": _object(key_fields, description="An API key, without its secret."),
        "ApiKeyWithSecret": _object(
            {**key_fields, "api_secret": secret},
            description="An API key with its new secret.",
        ),
        "ApiKeyCreate": _object(
            {
                "app_id": text_field(validation.MAX_ID_LENGTH, "App of the key."),
                "name": text_field(validation.MAX_NAME_LENGTH, "Key name."),
                "scopes": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(SCOPES)},
                    "minItems": 1,
                    "maxItems": validation.MAX_LIST_ITEMS,
                    "description": "Scopes to grant; duplicates are dropped.",
                },
                "expires_at": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "ISO 8601 time with a time zone, in the future;"
                    " null or absent for a key that never expires. Stored to the"
                    " second.",
                },
            },
            required=("app_id", "name", "scopes"),
        ),
    }


def _profile_schemas() -> dict[str, Any]:
    quality = _object(
        {
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": profiles.MAX_QUALITY_NAME_LENGTH,
                "pattern": "^" + profiles.QUALITY_NAME_PATTERN.pattern + "$",
                "description": "Unique within the profile.",
            },
            "width": _dimension("Width in pixels."),
            "height": _dimension("Height in pixels."),
            "bitrate": {
                "type": "integer",
                "minimum": profiles.MIN_VIDEO_BITRATE,
                "maximum": profiles.MAX_VIDEO_BITRATE,
                "description": "Video bitrate in kbps.",
            },
            "fps": {
                "type": "number",
                "minimum": profiles.MIN_FPS,
                "maximum": profiles.MAX_FPS,
                "description": "Frames per second.",
            },
        },
        description="One rendition of the ladder.",
    )
    fields = {
        "name": text_field(validation.MAX_NAME_LENGTH, "Profile name."),
        "description": optional_text_field(
            validation.MAX_DESCRIPTION_LENGTH, "Description."
        ),
        "qualities": {
            "type": "array",
            "items": schema_ref("Quality"),
            "minItems": profiles.MIN_QUALITIES,
            "maxItems": profiles.MAX_QUALITIES,
        },
        "audio_bitrate": {
            "type": "integer",
            "minimum": profiles.MIN_AUDIO_BITRATE,
            "maximum": profiles.MAX_AUDIO_BITRATE,
            "default": profiles.DEFAULT_AUDIO_BITRATE,
            "description": "AAC bitrate in kbps.",
        },
        "enable_gpu_acceleration": {
            "type": "boolean",
            "default": False,
            "description": "Use the first working hardware H.264 encoder"
            " (h264_nvenc, h264_qsv, h264_vaapi), else libx264.",
        },
    }
    return {
        "Quality": quality,
        "TranscodingProfile": _object(
            {
                "id": _id("profile", "Transcoding profile id."),
                "app_id": _id("app", "App of the profile."),
                "name": {"type": "string"},
                "description": {"type": "string"},
                "qualities": {"type": "array", "items": schema_ref("Quality")},
                "audio_bitrate": {"type": "integer"},
                "enable_gpu_acceleration": {"type": "boolean"},
                "created_at": _timestamp("Time of creation."),
            }
        ),
        "TranscodingProfileCreate": _object(
            {
                "app_id": text_field(validation.MAX_ID_LENGTH, "App of the profile."),
                **fields,
            },
            required=("app_id", "name", "qualities"),
        ),
        "TranscodingProfileUpdate": _object(
            fields,
            required=(),
            description="Fields to change; absent ones keep their value.",
        ),
        "EncoderStatus": dataclass_object(
            EncoderStatus,
            "Whether an H.264 encoder opened and encoded a test frame here;"
            " detail says why not when it failed.",
        ),
    }


def _dimension(description: str) -> dict[str, Any]:
    return {
        "type": "integer",
        "minimum": profiles.MIN_DIMENSION,
        "maximum": profiles.MAX_DIMENSION,
        "multipleOf": 2,
        "description": description,
    }


def _audit_schemas() -> dict[str, Any]:
    nullable_text = {"type": ["string", "null"]}
    return {
        "AuditLogEntry": _object(
            {
                "id": _id("log", "Entry id."),
                "user_id": {
                    **nullable_text,
                    "description": "User who acted, or the owner of the API key.",
                },
                "app_id": {**nullable_text, "description": "App concerned."},
                "api_key_id": {
                    **nullable_text,
                    "description": "API key that made the call, if one did.",
                },
                "action": {
                    "type": "string",
                    "description": "The audited call or the security event type,"
                    f" such as {', '.join(AUDIT_ACTIONS)}.",
                },
                "resource_type": nullable_text,
                "resource_id": nullable_text,
                "ip_address": {
                    **nullable_text,
                    "description": "Address of the TCP peer.",
                },
                "user_agent": {
                    "type": ["string", "null"],
                    "maxLength": MAX_USER_AGENT_LENGTH,
                },
                "status": {"type": "string", "enum": ["success", "failure"]},
                "security_event": {"type": "boolean"},
                "detail": {"type": "string", "description": "Error of a failure."},
                "timestamp": _timestamp("Time of the event."),
            }
        ),
    }


def _other_schemas() -> dict[str, Any]:
    detail = {"type": "string", "description": "What failed, and on which value."}
    return {
        "Error": _object(
            {
                "detail": detail,
                "status_code": {
                    "type": "integer",
                    "minimum": 400,
                    "maximum": 599,
                    "description": "The HTTP status code.",
                },
            }
        ),
        "RateLimitError": _object(
            {
                "detail": detail,
                "status_code": {"type": "integer", "const": 429},
                "retry_after": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Seconds until the request would be allowed.",
                },
            }
        ),
        "Health": _object(
            {
                "status": {"type": "string", "const": "ok"},
                "version": {"type": "string"},
                "data_disk_free_bytes": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "description": "Free bytes on the data directory's disk, "
                    "null when it cannot be read.",
                },
                "data_disk_total_bytes": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "description": "Size in bytes of the data directory's disk, "
                    "null when it cannot be read.",
                },
            }
        ),
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "description": "This OpenAPI 3.1 document.",
        },
    }


def schemas() -> dict[str, Any]:
    return {
        **_user_schemas(),
        **_app_schemas(),
        **_stream_schemas(),
        **_key_schemas(),
        **_profile_schemas(),
        **_audit_schemas(),
        **_other_schemas(),
    }


def _integer_header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "integer"}}


def headers() -> dict[str, Any]:
    return {
        "X-RateLimit-Limit": _integer_header(
            "Requests allowed in the window of the limit closest to running out."
        ),
        "X-RateLimit-Remaining": _integer_header("Requests left in that window."),
        "X-RateLimit-Reset": _integer_header(
            "Unix time, in seconds, when that window ends."
        ),
        "X-Total-Count": {
            "description": "Items that the query matches without limit and skip.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        },
        "Retry-After": {
            "description": "Seconds until the request would be allowed.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        },
        "WWW-Authenticate": {
            "description": "Bearer for access tokens, Basic for API keys.",
            "required": True,
            "schema": {"type": "string"},
        },
        "Allow": {
            "description": "Methods allowed on the path.",
            "required": True,
            "schema": {"type": "string"},
        },
    }


RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def header_refs(*names: str) -> dict[str, Any]:
    return {name: ref("headers", name) for name in names}


def error_responses() -> dict[str, Any]:
    """Return components.responses: one response per error status."""
    extra_headers = {
        401: ("WWW-Authenticate",),
        405: ("Allow",),
        429: ("Retry-After",),
    }
    responses = {}
    for status, (name, description) in ERROR_RESPONSES.items():
        body = "RateLimitError" if status == 429 else "Error"
        responses[name] = {
            "description": description,
            "headers": header_refs(*extra_headers.get(status, ()), *RATE_LIMIT_HEADERS),
            "content": json_content(schema_ref(body)),
        }
    return responses


def security_schemes() -> dict[str, Any]:
    return {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "User access token from POST /api/auth/login.",
        },
        "basicAuth": {
            "type": "http",
            "scheme": "basic",
            "description": "API key: api_key as user name, api_secret as password."
            " The operation's security requirement lists the scope it needs.",
        },
    }
