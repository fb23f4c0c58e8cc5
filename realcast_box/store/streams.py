"""Queries on the streams table.

Functions named ``*_owned_*`` or taking ``user_id`` are scoped to streams of
that user's apps (the API uses these). ``get_stream``, ``get_stream_by_key``
and the ``mark_*`` functions are unscoped, for the RTMP server and the hub.

A stream's status is ``created`` until its first publish, ``live`` while a
publisher is connected, ``reconnecting`` while its session waits for a
dropped publisher to come back, and ``offline`` after the session ended.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from realcast_box.store.apps import encode_settings
from realcast_box.store.db import Database
from realcast_box.store.ids import (
    format_timestamp,
    new_id,
    parse_timestamp,
    utc_now,
)

STREAM_COLUMNS = (
    "streams.id, streams.app_id, streams.title, streams.description,"
    " streams.settings, streams.stream_key, streams.status, streams.created_at,"
    " streams.started_at, streams.ended_at, streams.duration_seconds"
)
UPDATABLE_COLUMNS = ("title", "description", "settings")
OWNED = "streams.app_id IN (SELECT apps.id FROM apps WHERE apps.user_id = ?)"

# token_urlsafe(24) gives 32 characters of the URL-safe base64 alphabet.
STREAM_KEY_RANDOM_BYTES = 24
# A stream key is "{app_id}_{stream_id}_sk_{random}". Ids contain no "_" after
# their prefix, so the stream id can be read back from the key.
STREAM_KEY_PATTERN = re.compile(
    r"app_[A-Za-z0-9]+_(stream_[A-Za-z0-9]+)_sk_[A-Za-z0-9_-]+", re.ASCII
)
MAX_STREAM_KEY_LENGTH = 256
# Statuses of a stream whose publishing session has not ended.
SESSION_STATUSES = ("live", "reconnecting")


def new_stream_key(app_id: str, stream_id: str) -> str:
    random_part = secrets.token_urlsafe(STREAM_KEY_RANDOM_BYTES)
    return f"{app_id}_{stream_id}_sk_{random_part}"


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["settings"] = json.loads(row["settings"])
    return row


async def create_stream(
    db: Database,
    app_id: str,
    title: str,
    description: str,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Insert a stream in status "created" and return its row."""
    stream = {
        "id": new_id("stream"),
        "app_id": app_id,
        "title": title,
        "description": description,
        "settings": dict(settings),
        "stream_key": "",
        "status": "created",
        "created_at": format_timestamp(utc_now()),
        "started_at": None,
        "ended_at": None,
        "duration_seconds": None,
    }
    stream["stream_key"] = new_stream_key(app_id, stream["id"])
    await db.execute(
        "INSERT INTO streams (id, app_id, title, description, settings,"
        " stream_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            stream["id"],
            app_id,
            title,
            description,
            encode_settings(settings),
            stream["stream_key"],
            stream["created_at"],
        ),
    )
    return stream


async def get_stream(db: Database, stream_id: str) -> dict[str, Any] | None:
    row = await db.fetchone(
        f"SELECT {STREAM_COLUMNS} FROM streams WHERE streams.id = ?", (stream_id,)
    )
    return _decoded(row)


async def get_stream_by_key(db: Database, stream_key: str) -> dict[str, Any] | None:
    """Return the stream whose key is ``stream_key``, or None.

    The row is found by the stream id inside the key (a primary key lookup),
    then the whole key is compared in constant time, so response timing does
    not reveal how much of a guessed key matched.
    """
    if len(stream_key) > MAX_STREAM_KEY_LENGTH:
        return None
    match = STREAM_KEY_PATTERN.fullmatch(stream_key)
    if match is None:
        return None
    stream = await get_stream(db, match.group(1))
    if stream is None:
        return None
    if not hmac.compare_digest(
        stream["stream_key"].encode(), stream_key.encode("ascii")
    ):
        return None
    return stream


async def get_owned_stream(
    db: Database, stream_id: str, user_id: str
) -> dict[str, Any] | None:
    """Return the stream if it belongs to one of ``user_id``'s apps, else None."""
    row = await db.fetchone(
        f"SELECT {STREAM_COLUMNS} FROM streams WHERE streams.id = ? AND {OWNED}",
        (stream_id, user_id),
    )
    return _decoded(row)


def _owned_filter(user_id: str, app_id: str | None) -> tuple[str, list[Any]]:
    where = OWNED
    params: list[Any] = [user_id]
    if app_id is not None:
        where += " AND streams.app_id = ?"
        params.append(app_id)
    return where, params


async def list_owned_streams(
    db: Database, user_id: str, *, app_id: str | None, limit: int, skip: int
) -> list[dict[str, Any]]:
    """Return the user's streams (of one app if ``app_id``), newest first."""
    where, params = _owned_filter(user_id, app_id)
    rows = await db.fetchall(
        f"SELECT {STREAM_COLUMNS} FROM streams WHERE {where}"
        " ORDER BY streams.created_at DESC, streams.rowid DESC LIMIT ? OFFSET ?",
        (*params, limit, skip),
    )
    return [row for row in map(_decoded, rows) if row is not None]


async def count_owned_streams(db: Database, user_id: str, *, app_id: str | None) -> int:
    where, params = _owned_filter(user_id, app_id)
    row = await db.fetchone(
        f"SELECT COUNT(*) AS total FROM streams WHERE {where}", params
    )
    return int(row["total"]) if row else 0


async def update_owned_stream(
    db: Database, stream_id: str, user_id: str, changes: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Set the given columns (any of title, description, settings).

    Returns the updated stream, or None when the user has no such stream.
    """
    unknown = set(changes) - set(UPDATABLE_COLUMNS)
    if unknown:
        raise ValueError(f"cannot update stream columns {sorted(unknown)}")
    if changes:
        values = [
            encode_settings(value) if column == "settings" else value
            for column, value in changes.items()
        ]
        assignments = ", ".join(f"{column} = ?" for column in changes)
        updated = await db.execute(
            f"UPDATE streams SET {assignments} WHERE streams.id = ? AND {OWNED}",
            (*values, stream_id, user_id),
        )
        if updated == 0:
            return None
    return await get_owned_stream(db, stream_id, user_id)


async def delete_owned_stream(db: Database, stream_id: str, user_id: str) -> bool:
    """Delete the stream and return whether the user had such a stream."""
    deleted = await db.execute(
        f"DELETE FROM streams WHERE streams.id = ? AND {OWNED}", (stream_id, user_id)
    )
    return deleted > 0


async def reset_owned_stream_key(
    db: Database, stream_id: str, user_id: str
) -> dict[str, Any] | None:
    """Replace the stream's key with a new random one, so the old key stops working.

    Returns the updated stream, or None when the user has no such stream.
    """
    stream = await get_owned_stream(db, stream_id, user_id)
    if stream is None:
        return None
    stream_key = new_stream_key(stream["app_id"], stream_id)
    updated = await db.execute(
        f"UPDATE streams SET stream_key = ? WHERE streams.id = ? AND {OWNED}",
        (stream_key, stream_id, user_id),
    )
    if updated == 0:
        return None
    return await get_owned_stream(db, stream_id, user_id)


async def mark_stream_live(db: Database, stream_id: str, started_at: datetime) -> None:
    """Record that a publishing session started and clear the last session's end."""
    await db.execute(
        "UPDATE streams SET status = 'live', started_at = ?, ended_at = NULL,"
        " duration_seconds = NULL WHERE id = ?",
        (format_timestamp(started_at), stream_id),
    )


async def mark_stream_reconnecting(db: Database, stream_id: str) -> None:
    """Record that the stream's publisher dropped and the session waits for it."""
    await db.execute(
        "UPDATE streams SET status = 'reconnecting' WHERE id = ? AND status = 'live'",
        (stream_id,),
    )


async def mark_stream_resumed(db: Database, stream_id: str) -> None:
    """Record that a publisher continues the session; started_at stays."""
    await db.execute(
        "UPDATE streams SET status = 'live' WHERE id = ? AND status = 'reconnecting'",
        (stream_id,),
    )


# Session length in whole seconds from started_at to the end time parameter.
_DURATION_SQL = (
    "MAX(0, CAST(strftime('%s', :ended_at) AS INTEGER)"
    " - CAST(strftime('%s', started_at) AS INTEGER))"
)


async def mark_stream_offline(db: Database, stream_id: str, ended_at: datetime) -> None:
    """Record the end of the session and its duration_seconds.

    Only a stream marked live or reconnecting changes, so a second call keeps
    the first end.
    """
    await db.execute(
        "UPDATE streams SET status = 'offline', ended_at = :ended_at,"
        f" duration_seconds = {_DURATION_SQL}"
        " WHERE id = :stream_id AND status IN ('live', 'reconnecting')",
        {"ended_at": format_timestamp(ended_at), "stream_id": stream_id},
    )


async def reset_live_streams(db: Database, ended_at: datetime) -> list[dict[str, Any]]:
    """Mark every stream still in a session offline at ``ended_at``.

    Sessions do not survive a stop of the box, so streams left live or
    reconnecting (by a crash) end here. Call once at start-up, before the
    RTMP server accepts publishers. Returns the changed rows (``id``,
    ``app_id``, ``started_at``, ``ended_at``, ``duration_seconds``), so the
    caller can announce the ends.
    """
    return await db.fetchall(
        "UPDATE streams SET status = 'offline', ended_at = :ended_at,"
        f" duration_seconds = {_DURATION_SQL}"
        " WHERE status IN ('live', 'reconnecting')"
        " RETURNING id, app_id, started_at, ended_at, duration_seconds",
        {"ended_at": format_timestamp(ended_at)},
    )


def current_duration(stream: Mapping[str, Any], now: datetime | None = None) -> int:
    """Return the seconds of the current session so far, or of the last one.

    A stream never published has a duration of 0. The reconnect window
    counts as part of the session.
    """
    if stream["status"] in SESSION_STATUSES and stream["started_at"]:
        elapsed = (now or utc_now()) - parse_timestamp(stream["started_at"])
        return max(0, int(elapsed.total_seconds()))
    return int(stream["duration_seconds"] or 0)


async def get_stream_owner(db: Database, stream_id: str) -> dict[str, Any] | None:
    """Return the stream's id, app_id and owning user_id, or None. Unscoped."""
    return await db.fetchone(
        "SELECT streams.id, streams.app_id, apps.user_id FROM streams"
        " JOIN apps ON apps.id = streams.app_id WHERE streams.id = ?",
        (stream_id,),
    )


async def get_stream_settings(
    db: Database, stream_id: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Return the settings of the stream and of its app, or None. Unscoped."""
    row = await db.fetchone(
        "SELECT streams.settings, apps.settings AS app_settings FROM streams"
        " JOIN apps ON apps.id = streams.app_id WHERE streams.id = ?",
        (stream_id,),
    )
    if row is None:
        return None
    return json.loads(row["settings"]), json.loads(row["app_settings"])
