"""Random resource ids and the API's timestamp format."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

# Random bytes after an id's prefix: 8 bytes (64 bits) give 16 hex characters,
# so ids are not sequential and are impractical to guess.
ID_RANDOM_BYTES = 8

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def new_id(prefix: str) -> str:
    """Return a new random id such as ``app_3f9c0e1d2b4a5968`` for ``prefix`` "app"."""
    return f"{prefix}_{secrets.token_hex(ID_RANDOM_BYTES)}"


def utc_now() -> datetime:
    """Return the current UTC time truncated to whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)


def format_timestamp(moment: datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC with seconds precision and "Z".

    Raises ValueError for a naive datetime, whose time zone would be a guess.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {moment!r}")
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Parse a timestamp written by format_timestamp into an aware UTC datetime."""
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
