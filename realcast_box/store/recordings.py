"""Queries on the recordings table.

Functions taking ``user_id`` are scoped to recordings of that user's apps
(the API uses these). The others are unscoped, for the recorder.

A recording's status is ``recording`` while media is written,
``processing`` while its file is finalized, then ``completed`` or
``failed`` (with ``failure_reason``). A stream has at most one recording in
``recording``, which a unique index enforces.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp, utc_now

RECORDING_COLUMNS = (
    "recordings.id, recordings.app_id, recordings.stream_id, recordings.title,"
    " recordings.description, recordings.source, recordings.stream_url,"
    " recordings.status, recordings.failure_reason, recordings.duration,"
    " recordings.file_size, recordings.has_thumbnail, recordings.created_at,"
    " recordings.completed_at"
)
OWNED = "recordings.app_id IN (SELECT apps.id FROM apps WHERE apps.user_id = ?)"
UPDATABLE_COLUMNS = ("title", "description")
# Statuses whose file may still change; recovery looks for these at start.
UNFINISHED_STATUSES = ("recording", "processing")


class ActiveRecordingExists(Exception):
    """The stream already has a recording in status ``recording``."""


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["has_thumbnail"] = bool(row["has_thumbnail"])
    return row


async def create_recording(db: Database, recording: Mapping[str, Any]) -> None:
    """Insert a recording row in status ``recording``.

    Raises ActiveRecordingExists when the stream has an active recording.
    """
    columns = (
        "id",
        "app_id",
        "stream_id",
        "title",
        "description",
        "source",
        "stream_url",
        "created_at",
    )
    try:
        await db.execute(
            f"INSERT INTO recordings ({', '.join(columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})",
            tuple(recording[column] for column in columns),
        )
    except sqlite3.IntegrityError as exc:
        if "recordings.stream_id" in str(exc):
            raise ActiveRecordingExists(recording["stream_id"]) from None
        raise


async def get_recording(db: Database, recording_id: str) -> dict[str, Any] | None:
    row = await db.fetchone(
        f"SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = ?", (recording_id,)
    )
    return _decoded(row)


async def get_owned_recording(
    db: Database, recording_id: str, user_id: str
) -> dict[str, Any] | None:
    row = await db.fetchone(
        f"SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = ? AND {OWNED}",
        (recording_id, user_id),
    )
    return _decoded(row)


async def get_active_recording(db: Database, stream_id: str) -> dict[str, Any] | None:
    """Return the stream's recording in status ``recording``, if any."""
    row = await db.fetchone(
        f"SELECT {RECORDING_COLUMNS} FROM recordings"
        " WHERE stream_id = ? AND status = 'recording'",
        (stream_id,),
    )
    return _decoded(row)


def _owned_filter(
    user_id: str, app_id: str | None, stream_id: str | None
) -> tuple[str, tuple[Any, ...]]:
    where, params = [OWNED], [user_id]
    if app_id is not None:
        where.append("recordings.app_id = ?")
        params.append(app_id)
    if stream_id is not None:
        where.append("recordings.stream_id = ?")
        params.append(stream_id)
    return " AND ".join(where), tuple(params)


async def list_owned_recordings(
    db: Database,
    user_id: str,
    *,
    app_id: str | None,
    stream_id: str | None,
    limit: int,
    skip: int,
) -> list[dict[str, Any]]:
    """Return the user's recordings, filtered by app and stream, newest first."""
    where, params = _owned_filter(user_id, app_id, stream_id)
    rows = await db.fetchall(
        f"SELECT {RECORDING_COLUMNS} FROM recordings WHERE {where}"
        " ORDER BY recordings.created_at DESC, recordings.rowid DESC"
        " LIMIT ? OFFSET ?",
        (*params, limit, skip),
    )
    return [row for row in map(_decoded, rows) if row is not None]


async def count_owned_recordings(
    db: Database, user_id: str, *, app_id: str | None, stream_id: str | None
) -> int:
    where, params = _owned_filter(user_id, app_id, stream_id)
    row = await db.fetchone(
        f"SELECT COUNT(*) AS total FROM recordings WHERE {where}", params
    )
    return int(row["total"]) if row else 0


async def update_recording_text(
    db: Database, recording_id: str, changes: Mapping[str, Any]
) -> None:
    """Set the title and description columns present in ``changes``."""
    unknown = set(changes) - set(UPDATABLE_COLUMNS)
    if unknown:
        raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
    if not changes:
        return
    assignments = ", ".join(f"{column} = ?" for column in changes)
    await db.execute(
        f"UPDATE recordings SET {assignments} WHERE id = ?",
        (*changes.values(), recording_id),
    )


async def mark_processing(db: Database, recording_id: str) -> bool:
    """Move a recording from ``recording`` to ``processing``; False if it was not."""
    changed = await db.execute(
        "UPDATE recordings SET status = 'processing'"
        " WHERE id = ? AND status = 'recording'",
        (recording_id,),
    )
    return changed > 0


async def mark_completed(
    db: Database,
    recording_id: str,
    *,
    duration: float,
    file_size: int,
    has_thumbnail: bool,
    completed_at: datetime | None = None,
) -> None:
    await db.execute(
        "UPDATE recordings SET status = 'completed', failure_reason = NULL,"
        " duration = ?, file_size = ?, has_thumbnail = ?, completed_at = ?"
        " WHERE id = ?",
        (
            duration,
            file_size,
            int(has_thumbnail),
            format_timestamp(completed_at or utc_now()),
            recording_id,
        ),
    )


async def mark_failed(
    db: Database,
    recording_id: str,
    reason: str,
    *,
    duration: float | None = None,
    file_size: int | None = None,
) -> None:
    await db.execute(
        "UPDATE recordings SET status = 'failed', failure_reason = ?,"
        " duration = ?, file_size = ?, completed_at = ? WHERE id = ?",
        (reason, duration, file_size, format_timestamp(utc_now()), recording_id),
    )


async def list_unfinished(db: Database) -> list[dict[str, Any]]:
    """Return recordings left in ``recording`` or ``processing``, oldest first."""
    rows = await db.fetchall(
        f"SELECT {RECORDING_COLUMNS} FROM recordings"
        " WHERE status IN ('recording', 'processing') ORDER BY created_at",
    )
    return [row for row in map(_decoded, rows) if row is not None]


async def list_expired(db: Database, before: datetime) -> list[str]:
    """Return the ids of finished recordings created before ``before``."""
    rows = await db.fetchall(
        "SELECT id FROM recordings WHERE status IN ('completed', 'failed')"
        " AND created_at < ?",
        (format_timestamp(before),),
    )
    return [row["id"] for row in rows]


async def existing_ids(db: Database) -> set[str]:
    rows = await db.fetchall("SELECT id FROM recordings")
    return {row["id"] for row in rows}


async def delete_recording(db: Database, recording_id: str) -> bool:
    changed = await db.execute("DELETE FROM recordings WHERE id = ?", (recording_id,))
    return changed > 0


async def recording_settings(db: Database, stream_id: str) -> dict[str, Any] | None:
    """Return the app's and the stream's settings JSON of ``stream_id``."""
    return await db.fetchone(
        "SELECT apps.settings AS app_settings, streams.settings AS stream_settings,"
        " streams.app_id AS app_id, streams.title AS title,"
        " streams.description AS description"
        " FROM streams JOIN apps ON apps.id = streams.app_id WHERE streams.id = ?",
        (stream_id,),
    )
