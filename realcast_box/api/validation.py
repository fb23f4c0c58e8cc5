"""Request body and query parameter checks for the API handlers.

Bodies must be JSON objects of at most 1 MiB. Unknown fields are rejected
with a 400 that names the field, so a typo such as "titel" in a PUT fails
loudly instead of silently changing nothing. Every 400 message starts with
the name of the field or parameter at fault, as in "title: field required".

Optional text fields (description, full_name) accept a string or null and
default to ""; null is stored as "". ``settings`` must be a JSON object and
defaults to {}.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from realcast_box.api.errors import ApiError

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


def bad_request(field: str, problem: str) -> ApiError:
    return ApiError(400, f"{field}: {problem}")


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
    return value


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
    return _stripped_text(body[field], field, max_length)


def _stripped_text(value: Any, field: str, max_length: int) -> str:
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
    """Check that a settings value is a JSON object and return it."""
    if not isinstance(value, dict):
        raise bad_request(field, f"must be a JSON object, got {_json_type_name(value)}")
    return value


def email_address(body: Mapping[str, Any], field: str = "email") -> str:
    email = required_text(body, field, max_length=MAX_EMAIL_LENGTH)
    if EMAIL_PATTERN.fullmatch(email) is None:
        raise bad_request(field, f"invalid email address {email!r}")
    return email


def password(body: Mapping[str, Any], *, check_minimum: bool = True) -> str:
    """Return the password field unstripped, because spaces are part of a password."""
    if "password" not in body:
        raise bad_request("password", "field required")
    value = body["password"]
    if not isinstance(value, str):
        kind = _json_type_name(value)
        raise bad_request("password", f"must be a string, got {kind}")
    if check_minimum and len(value) < MIN_PASSWORD_LENGTH:
        raise bad_request(
            "password", f"must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(value) > MAX_PASSWORD_LENGTH:
        raise bad_request(
            "password", f"must be at most {MAX_PASSWORD_LENGTH} characters"
        )
    return value


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


def pagination(request: web.Request) -> tuple[int, int]:
    """Return (limit, skip) from the query: limit 1 to 100 (default 50), skip >= 0."""
    limit = query_int(
        request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT
    )
    skip = query_int(request, "skip", default=0, minimum=0, maximum=MAX_SKIP)
    return limit, skip
