"""Request body and query parameter checks for the API handlers.

Bodies must be JSON objects of at most 1 MiB. Unknown fields are rejected
with a 400 that names the field, so a typo such as "titel" in a PUT fails
loudly instead of silently changing nothing. Every 400 message starts with
the name of the field or parameter at fault, as in "title: field required".

Optional text fields (description, full_name) accept a string or null and
default to ""; null is stored as "". ``settings`` must be a JSON object and
defaults to {}.

Handlers declare their body as a tuple of ``Field`` (name, check, required)
and call ``read_fields``. A check takes (value, field name) and returns the
value to use or raises the 400; ``text``, ``optional_text``, ``settings_object``,
``stream_settings_object``, ``email_value``, ``password_value``, ``choice_list``
and ``future_timestamp`` are the checks, and ``functools.partial`` sets their options.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from realcast_box.api.errors import ApiError
from realcast_box.hls.playback import PLAYBACK_POLICIES
from realcast_box.store.ids import format_timestamp, utc_now

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
READ_CHUNK_BYTES = 64 * 1024

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 5000
MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
# SQLite integers are 64-bit signed, so larger offsets cannot be bound.
MAX_SKIP = 2**63 - 1

# One "@", no spaces or control characters, a domain with at least one dot.
EMAIL_PATTERN = re.compile(
    r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f.]+(\.[^@\s\x00-\x1f\x7f.]+)+"
)
INTEGER_PATTERN = re.compile(r"-?[0-9]{1,20}", re.ASCII)


MAX_ID_LENGTH = 100
MAX_LIST_ITEMS = 100


def bad_request(field: str, problem: str) -> ApiError:
    return ApiError(400, f"{field}: {problem}")


@dataclass(frozen=True)
class Field:
    """One field of a request body: its name, its check and whether it is required."""

    name: str
    check: Callable[[Any, str], Any]
    required: bool = False


async def read_fields(
    request: web.Request, fields: Sequence[Field], *, partial: bool = False
) -> dict[str, Any]:
    """Read a JSON object body and return the checked value of each field present.

    Fields are checked in the order given, so the 400 names the first field
    at fault. With ``partial`` (an update), required fields may be absent.
    """
    body = await read_json_object(request, allowed=[field.name for field in fields])
    values: dict[str, Any] = {}
    for field in fields:
        if field.name in body:
            values[field.name] = field.check(body[field.name], field.name)
        elif field.required and not partial:
            raise bad_request(field.name, "field required")
    return values


async def read_json_object(
    request: web.Request, *, allowed: Collection[str]
) -> dict[str, Any]:
    """Read the body as a JSON object whose keys are all in ``allowed``.

    Raises ApiError 413 for a body over MAX_BODY_BYTES, and 400 for a body
    that is empty, not UTF-8 JSON, not an object, nested too deeply, or has
    a field outside ``allowed``.
    """
    body = await _read_body(request)
    if not body.strip():
        raise ApiError(400, "request body is empty: expected a JSON object")
    try:
        value = json.loads(
            body.decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_parse_finite_float,
        )
    except RecursionError:
        raise ApiError(
            400, "malformed JSON in request body: nested too deeply"
        ) from None
    except ValueError as exc:
        raise ApiError(400, f"malformed JSON in request body: {exc}") from None
    if not isinstance(value, dict):
        kind = _json_type_name(value)
        raise ApiError(400, f"request body must be a JSON object, got {kind}")
    if _nested_deeper_than(value, MAX_JSON_DEPTH):
        raise ApiError(
            400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels"
        )
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        expected = ", ".join(sorted(allowed))
        raise bad_request(unknown[0], f"unknown field (allowed fields: {expected})")
    for field, item in value.items():
        if not _encodable(item):
            raise bad_request(
                field, "contains a lone UTF-16 surrogate escape, which is not text"
            )
    return value


def _encodable(value: Any) -> bool:
    """Return whether every string in ``value`` encodes as UTF-8.

    json.loads accepts escapes such as "\\ud800" that decode to lone
    surrogates, which SQLite cannot store.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(key) and _encodable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_encodable(item) for item in value)
    return True


async def _read_body(request: web.Request) -> bytes:
    too_large = ApiError(
        413, f"request body too large: the maximum is {MAX_BODY_BYTES} bytes"
    )
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Return whether arrays and objects in ``value`` nest more than ``limit`` deep.

    Iterative, because json.loads accepts nesting deep enough to exhaust
    Python's recursion limit.
    """
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def required_text(body: Mapping[str, Any], field: str, *, max_length: int) -> str:
    """Return the field as a non-blank string without surrounding whitespace."""
    if field not in body:
        raise bad_request(field, "field required")
    return text(body[field], field, max_length=max_length)


def text(value: Any, field: str, *, max_length: int) -> str:
    """Check a text value and return it without surrounding whitespace.

    Raises the 400 for a value that is not a string, is blank, or is longer
    than ``max_length`` once stripped.
    """
    if not isinstance(value, str):
        raise bad_request(field, f"must be a string, got {_json_type_name(value)}")
    text = value.strip()
    if not text:
        raise bad_request(field, "must not be empty")
    if len(text) > max_length:
        raise bad_request(field, f"must be at most {max_length} characters")
    return text


def optional_text(value: Any, field: str, *, max_length: int) -> str:
    """Check an optional text field's value. None (absent or null) becomes ""."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(field, f"must be a string, got {_json_type_name(value)}")
    if len(value) > max_length:
        raise bad_request(field, f"must be at most {max_length} characters")
    return value


def settings_object(value: Any, field: str = "settings") -> dict[str, Any]:
    """Check that a settings value is a JSON object and return it.

    The keys the box reads are checked too: ``playback_policy``, when
    present, must be "public" or "signed".
    """
    if not isinstance(value, dict):
        raise bad_request(field, f"must be a JSON object, got {_json_type_name(value)}")
    if "playback_policy" in value:
        policy = value["playback_policy"]
        if policy not in PLAYBACK_POLICIES:
            shown = repr(policy) if isinstance(policy, str) else _json_type_name(policy)
            raise bad_request(
                f"{field}.playback_policy",
                f"must be one of {', '.join(PLAYBACK_POLICIES)}, got {shown}"
                " (leave it out to use the app's policy, or public)",
            )
    _check_chat_settings(value, field)
    return value


MAX_SLOW_MODE_SECONDS = 3600


def _check_chat_settings(value: dict[str, Any], field: str) -> None:
    """Check the chat keys: two booleans and slow mode in whole seconds."""
    for name in ("chat_enabled", "chat_allow_anonymous"):
        if name in value and not isinstance(value[name], bool):
            raise bad_request(
                f"{field}.{name}",
                f"must be true or false, got {_json_type_name(value[name])}",
            )
    if "chat_slow_mode_seconds" in value:
        seconds = value["chat_slow_mode_seconds"]
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int)
            or not 0 <= seconds <= MAX_SLOW_MODE_SECONDS
        ):
            raise bad_request(
                f"{field}.chat_slow_mode_seconds",
                f"must be an integer from 0 to {MAX_SLOW_MODE_SECONDS} (0 turns"
                f" slow mode off), got {seconds!r}",
            )


def stream_settings_object(value: Any, field: str = "settings") -> dict[str, Any]:
    """Check a stream's settings: those of ``settings_object``, plus the profile.

    ``transcoding_profile_id``, when present, must be a string or null (no
    profile). Whether the profile exists in the stream's app needs the
    database, so api.profiles.check_stream_profile checks that afterwards.
    """
    settings = settings_object(value, field)
    profile_id = settings.get("transcoding_profile_id")
    if profile_id is not None:
        name = f"{field}.transcoding_profile_id"
        if not isinstance(profile_id, str):
            kind = _json_type_name(profile_id)
            raise bad_request(name, f"must be a profile id string or null, got {kind}")
        if not profile_id or len(profile_id) > MAX_ID_LENGTH:
            raise bad_request(
                name, f"must be from 1 to {MAX_ID_LENGTH} characters long"
            )
    return settings


def email_address(body: Mapping[str, Any], field: str = "email") -> str:
    if field not in body:
        raise bad_request(field, "field required")
    return email_value(body[field], field)


def email_value(value: Any, field: str) -> str:
    email = text(value, field, max_length=MAX_EMAIL_LENGTH)
    if EMAIL_PATTERN.fullmatch(email) is None:
        raise bad_request(field, f"invalid email address {email!r}")
    return email


def password(body: Mapping[str, Any], *, check_minimum: bool = True) -> str:
    """Return the password field unstripped, because spaces are part of a password."""
    if "password" not in body:
        raise bad_request("password", "field required")
    return password_value(body["password"], "password", check_minimum=check_minimum)


def password_value(value: Any, field: str, *, check_minimum: bool = True) -> str:
    """Check a password and return it unstripped: spaces are part of a password."""
    if not isinstance(value, str):
        kind = _json_type_name(value)
        raise bad_request(field, f"must be a string, got {kind}")
    if check_minimum and len(value) < MIN_PASSWORD_LENGTH:
        raise bad_request(field, f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise bad_request(field, f"must be at most {MAX_PASSWORD_LENGTH} characters")
    return value


def choice_list(value: Any, field: str, *, choices: Sequence[str]) -> list[str]:
    """Check a non-empty array of strings from ``choices``; drop duplicates.

    The 400 for unknown values names every one of them and lists the choices.
    """
    if not isinstance(value, list):
        raise bad_request(field, f"must be an array, got {_json_type_name(value)}")
    if not value:
        raise bad_request(field, "must not be empty")
    if len(value) > MAX_LIST_ITEMS:
        raise bad_request(field, f"must have at most {MAX_LIST_ITEMS} items")
    for item in value:
        if not isinstance(item, str):
            kind = _json_type_name(item)
            raise bad_request(field, f"items must be strings, got {kind}")
    unknown = sorted({item for item in value if item not in choices})
    if unknown:
        named = ", ".join(repr(item) for item in unknown)
        raise bad_request(
            field, f"unknown value {named} (allowed: {', '.join(choices)})"
        )
    return list(dict.fromkeys(value))


def future_timestamp(value: Any, field: str) -> datetime | None:
    """Check an ISO 8601 time with a time zone that lies in the future.

    null gives None. The result is truncated to whole seconds, the precision
    the API stores and returns.
    """
    if value is None:
        return None
    example = "such as 2030-01-31T12:00:00Z"
    if not isinstance(value, str):
        kind = _json_type_name(value)
        raise bad_request(field, f"must be an ISO 8601 time {example}, got {kind}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(
            field, f"invalid ISO 8601 time {value!r}: expected one {example}"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise bad_request(
            field, f"time {value!r} has no time zone: add Z or an offset, {example}"
        )
    try:
        moment = moment.astimezone(UTC).replace(microsecond=0)
    except OverflowError:
        # Such as 9999-12-31T23:59:59-01:00, which is past year 9999 in UTC.
        raise bad_request(
            field,
            f"time {value!r} is out of range: it must lie in the years 1-9999 UTC",
        ) from None
    now = utc_now()
    if moment <= now:
        raise bad_request(
            field,
            f"time {value!r} is not in the future (now is {format_timestamp(now)})",
        )
    return moment


def query_int(
    request: web.Request, name: str, *, default: int, minimum: int, maximum: int
) -> int:
    """Return an integer query parameter, or ``default`` when it is absent."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if INTEGER_PATTERN.fullmatch(raw) is None or not (minimum <= int(raw) <= maximum):
        raise bad_request(
            name, f"must be an integer from {minimum} to {maximum}, got {raw!r}"
        )
    return int(raw)


def optional_query_int(
    request: web.Request, name: str, *, minimum: int, maximum: int
) -> int | None:
    """Return an integer query parameter, or None when it is absent."""
    if name not in request.query:
        return None
    return query_int(request, name, default=minimum, minimum=minimum, maximum=maximum)


def query_id(request: web.Request, name: str) -> str | None:
    """Return an id query parameter such as app_id, or None when it is absent."""
    value = request.query.get(name)
    if value is None:
        return None
    if not value:
        raise bad_request(name, "must not be empty (omit the parameter to list all)")
    if len(value) > MAX_ID_LENGTH:
        raise bad_request(name, f"must be at most {MAX_ID_LENGTH} characters")
    return value


def page_response(items: list[Any], total: int) -> web.Response:
    """Return one page of a listing, with the size of the whole listing.

    ``X-Total-Count`` is the number of items that match the query without
    ``limit`` and ``skip``.
    """
    return web.json_response(items, headers={"X-Total-Count": str(total)})


def pagination(request: web.Request) -> tuple[int, int]:
    """Return (limit, skip) from the query: limit 1 to 100 (default 50), skip >= 0."""
    limit = query_int(
        request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT
    )
    skip = query_int(request, "skip", default=0, minimum=0, maximum=MAX_SKIP)
    return limit, skip
