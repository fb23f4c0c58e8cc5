"""Queries on the apps table. Every query is scoped to the owning user."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp, new_id, utc_now

APP_COLUMNS = "id, user_id, name, description, settings, created_at"
UPDATABLE_COLUMNS = ("name", "description", "settings")


def encode_settings(settings: Mapping[str, Any]) -> str:
    """Serialize a settings object for storage, keeping its key order."""
    return json.dumps(settings, ensure_ascii=False, separators=(",", ":"))


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["settings"] = json.loads(row["settings"])
    return row


async def create_app(
    db: Database,
    user_id: str,
    name: str,
    description: str,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    app = {
        "id": new_id("app"),
        "user_id": user_id,
        "name": name,
        "description": description,
        "settings": dict(settings),
        "created_at": format_timestamp(utc_now()),
    }
    await db.execute(
        f"INSERT INTO apps ({APP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        (
            app["id"],
            user_id,
            name,
            description,
            encode_settings(settings),
            app["created_at"],
        ),
    )
    return app


async def get_app(db: Database, app_id: str, user_id: str) -> dict[str, Any] | None:
    """Return the app if it exists and belongs to ``user_id``, else None."""
    row = await db.fetchone(
        f"SELECT {APP_COLUMNS} FROM apps WHERE id = ? AND user_id = ?",
        (app_id, user_id),
    )
    return _decoded(row)


async def list_apps(
    db: Database, user_id: str, *, limit: int, skip: int
) -> list[dict[str, Any]]:
    """Return the user's apps, newest first."""
    rows = await db.fetchall(
        f"SELECT {APP_COLUMNS} FROM apps WHERE user_id = ?"
        " ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
        (user_id, limit, skip),
    )
    return [row for row in map(_decoded, rows) if row is not None]


async def count_apps(db: Database, user_id: str) -> int:
    row = await db.fetchone(
        "SELECT COUNT(*) AS total FROM apps WHERE user_id = ?", (user_id,)
    )
    return int(row["total"]) if row else 0


async def update_app(
    db: Database, app_id: str, user_id: str, changes: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Set the given columns (any of name, description, settings).

    Returns the updated app, or None when the user has no such app.
    """
    unknown = set(changes) - set(UPDATABLE_COLUMNS)
    if unknown:
        raise ValueError(f"cannot update app columns {sorted(unknown)}")
    if changes:
        values = [
            encode_settings(value) if column == "settings" else value
            for column, value in changes.items()
        ]
        assignments = ", ".join(f"{column} = ?" for column in changes)
        updated = await db.execute(
            f"UPDATE apps SET {assignments} WHERE id = ? AND user_id = ?",
            (*values, app_id, user_id),
        )
        if updated == 0:
            return None
    return await get_app(db, app_id, user_id)


async def delete_app(db: Database, app_id: str, user_id: str) -> list[str] | None:
    """Delete the app and, through ON DELETE CASCADE, its streams.

    Returns the ids of the deleted streams, or None when the user has no such
    app, so the caller can disconnect their live publishers.
    """
    rows = await db.fetchall(
        "SELECT streams.id FROM streams JOIN apps ON apps.id = streams.app_id"
        " WHERE apps.id = ? AND apps.user_id = ?",
        (app_id, user_id),
    )
    deleted = await db.execute(
        "DELETE FROM apps WHERE id = ? AND user_id = ?", (app_id, user_id)
    )
    if deleted == 0:
        return None
    return [row["id"] for row in rows]
