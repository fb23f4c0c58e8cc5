"""Queries for chat: messages, bans and the settings a chat room reads.

Unscoped: the API checks that the caller may reach the stream before it
calls these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp, new_id

MESSAGE_COLUMNS = "id, stream_id, viewer_id, display_name, role, text, created_at"


@dataclass(frozen=True)
class ChatAccess:
    """A stream's owner and the settings of the stream and its app."""

    stream_id: str
    app_id: str
    user_id: str
    app_settings: dict[str, Any]
    stream_settings: dict[str, Any]
    generation: int


async def get_chat_access(db: Database, stream_id: str) -> ChatAccess | None:
    """Return the owner, settings and playback generation of a stream, or None."""
    row = await db.fetchone(
        "SELECT streams.app_id AS app_id, apps.user_id AS user_id,"
        " streams.settings AS stream_settings, apps.settings AS app_settings,"
        " COALESCE(playback_revocations.generation, 0) AS generation"
        " FROM streams JOIN apps ON apps.id = streams.app_id"
        " LEFT JOIN playback_revocations"
        " ON playback_revocations.stream_id = streams.id"
        " WHERE streams.id = ?",
        (stream_id,),
    )
    if row is None:
        return None
    return ChatAccess(
        stream_id=stream_id,
        app_id=row["app_id"],
        user_id=row["user_id"],
        app_settings=json.loads(row["app_settings"]),
        stream_settings=json.loads(row["stream_settings"]),
        generation=int(row["generation"]),
    )


async def insert_message(
    db: Database,
    stream_id: str,
    viewer_id: str,
    display_name: str,
    role: str,
    text: str,
    created_at: datetime,
) -> dict[str, Any]:
    """Store a new message and return it."""
    message = {
        "id": new_id("msg"),
        "stream_id": stream_id,
        "viewer_id": viewer_id,
        "display_name": display_name,
        "role": role,
        "text": text,
        "created_at": format_timestamp(created_at),
    }
    await db.execute(
        f"INSERT INTO chat_messages ({MESSAGE_COLUMNS})"
        " VALUES (:id, :stream_id, :viewer_id, :display_name, :role, :text,"
        " :created_at)",
        message,
    )
    return message


async def list_messages(
    db: Database, stream_id: str, *, limit: int, before: str | None = None
) -> list[dict[str, Any]] | None:
    """Return up to ``limit`` messages, oldest first, that precede ``before``.

    Without ``before``, returns the newest messages. Deleted messages are
    left out. Returns None when ``before`` names no message of the stream.
    """
    params: list[Any] = [stream_id]
    condition = ""
    if before is not None:
        row = await db.fetchone(
            "SELECT seq FROM chat_messages WHERE id = ? AND stream_id = ?",
            (before, stream_id),
        )
        if row is None:
            return None
        condition = " AND seq < ?"
        params.append(row["seq"])
    params.append(limit)
    rows = await db.fetchall(
        f"SELECT {MESSAGE_COLUMNS} FROM chat_messages"
        f" WHERE stream_id = ? AND deleted_at IS NULL{condition}"
        " ORDER BY seq DESC LIMIT ?",
        params,
    )
    rows.reverse()
    return rows


async def get_message(
    db: Database, stream_id: str, message_id: str
) -> dict[str, Any] | None:
    """Return a message of the stream that is not deleted, or None."""
    return await db.fetchone(
        f"SELECT {MESSAGE_COLUMNS} FROM chat_messages"
        " WHERE id = ? AND stream_id = ? AND deleted_at IS NULL",
        (message_id, stream_id),
    )


async def delete_message(
    db: Database, stream_id: str, message_id: str, deleted_by: str, now: datetime
) -> bool:
    """Mark a message deleted; return False when there was none to delete."""
    changed = await db.execute(
        "UPDATE chat_messages SET deleted_at = ?, deleted_by = ?"
        " WHERE id = ? AND stream_id = ? AND deleted_at IS NULL",
        (format_timestamp(now), deleted_by, message_id, stream_id),
    )
    return changed > 0


def _active(now: datetime) -> tuple[str, str]:
    return " AND (expires_at IS NULL OR expires_at > ?)", format_timestamp(now)


async def upsert_ban(
    db: Database,
    stream_id: str,
    viewer_id: str,
    *,
    reason: str,
    created_by: str,
    now: datetime,
    expires_at: datetime | None,
) -> dict[str, Any]:
    """Ban ``viewer_id`` from the stream's chat, replacing an earlier ban."""
    ban = {
        "id": new_id("ban"),
        "stream_id": stream_id,
        "viewer_id": viewer_id,
        "reason": reason,
        "created_by": created_by,
        "created_at": format_timestamp(now),
        "expires_at": None if expires_at is None else format_timestamp(expires_at),
    }
    await db.execute(
        "INSERT INTO chat_bans"
        " (id, stream_id, viewer_id, reason, created_by, created_at, expires_at)"
        " VALUES (:id, :stream_id, :viewer_id, :reason, :created_by, :created_at,"
        " :expires_at)"
        " ON CONFLICT (stream_id, viewer_id) DO UPDATE SET id = excluded.id,"
        " reason = excluded.reason, created_by = excluded.created_by,"
        " created_at = excluded.created_at, expires_at = excluded.expires_at",
        ban,
    )
    return ban


async def get_active_ban(
    db: Database, stream_id: str, viewer_id: str, now: datetime
) -> dict[str, Any] | None:
    """Return the ban of ``viewer_id`` on the stream if it has not expired."""
    condition, moment = _active(now)
    return await db.fetchone(
        "SELECT * FROM chat_bans WHERE stream_id = ? AND viewer_id = ?" + condition,
        (stream_id, viewer_id, moment),
    )


async def list_active_bans(
    db: Database, stream_id: str, now: datetime
) -> list[dict[str, Any]]:
    """Return the bans of the stream that have not expired, newest first."""
    condition, moment = _active(now)
    return await db.fetchall(
        "SELECT * FROM chat_bans WHERE stream_id = ?"
        + condition
        + " ORDER BY created_at DESC, id",
        (stream_id, moment),
    )


async def delete_ban(db: Database, stream_id: str, ban_id: str) -> bool:
    """Lift a ban; return False when the stream has no ban with that id."""
    changed = await db.execute(
        "DELETE FROM chat_bans WHERE id = ? AND stream_id = ?", (ban_id, stream_id)
    )
    return changed > 0
