"""Queries on the transcoding_profiles table, scoped to the owning user.

A profile belongs to one app. Every function that takes ``user_id`` joins
the apps table, so a user reaches the profiles of their own apps only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp, new_id, utc_now

PROFILE_COLUMNS = (
    "transcoding_profiles.id, transcoding_profiles.app_id,"
    " transcoding_profiles.name, transcoding_profiles.description,"
    " transcoding_profiles.qualities, transcoding_profiles.audio_bitrate,"
    " transcoding_profiles.enable_gpu_acceleration,"
    " transcoding_profiles.created_at"
)
OWNED_PROFILES = (
    "transcoding_profiles JOIN apps ON apps.id = transcoding_profiles.app_id"
)
UPDATABLE_COLUMNS = (
    "name",
    "description",
    "qualities",
    "audio_bitrate",
    "enable_gpu_acceleration",
)


def _encode(column: str, value: Any) -> Any:
    if column == "qualities":
        return json.dumps(value, separators=(",", ":"))
    if column == "enable_gpu_acceleration":
        return int(bool(value))
    return value


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["qualities"] = json.loads(row["qualities"])
        row["enable_gpu_acceleration"] = bool(row["enable_gpu_acceleration"])
    return row


async def create_profile(
    db: Database, app_id: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Insert a profile of ``app_id`` from checked API fields and return it."""
    profile = {
        "id": new_id("profile"),
        "app_id": app_id,
        "name": fields["name"],
        "description": fields.get("description", ""),
        "qualities": list(fields["qualities"]),
        "audio_bitrate": fields["audio_bitrate"],
        "enable_gpu_acceleration": bool(fields["enable_gpu_acceleration"]),
        "created_at": format_timestamp(utc_now()),
    }
    columns = list(profile)
    await db.execute(
        f"INSERT INTO transcoding_profiles ({', '.join(columns)})"
        f" VALUES ({', '.join('?' for _ in columns)})",
        tuple(_encode(column, profile[column]) for column in columns),
    )
    return profile


async def get_owned_profile(
    db: Database, profile_id: str, user_id: str
) -> dict[str, Any] | None:
    """Return the profile if it belongs to an app of ``user_id``, else None."""
    row = await db.fetchone(
        f"SELECT {PROFILE_COLUMNS} FROM {OWNED_PROFILES}"
        " WHERE transcoding_profiles.id = ? AND apps.user_id = ?",
        (profile_id, user_id),
    )
    return _decoded(row)


def _owned_filter(user_id: str, app_id: str | None) -> tuple[str, tuple[Any, ...]]:
    if app_id is None:
        return "apps.user_id = ?", (user_id,)
    return "apps.user_id = ? AND apps.id = ?", (user_id, app_id)


async def list_owned_profiles(
    db: Database, user_id: str, *, app_id: str | None, limit: int, skip: int
) -> list[dict[str, Any]]:
    """Return the profiles of the user's apps (or of one app), newest first."""
    where, params = _owned_filter(user_id, app_id)
    rows = await db.fetchall(
        f"SELECT {PROFILE_COLUMNS} FROM {OWNED_PROFILES} WHERE {where}"
        " ORDER BY transcoding_profiles.created_at DESC,"
        " transcoding_profiles.rowid DESC LIMIT ? OFFSET ?",
        (*params, limit, skip),
    )
    return [row for row in map(_decoded, rows) if row is not None]


async def count_owned_profiles(
    db: Database, user_id: str, *, app_id: str | None
) -> int:
    where, params = _owned_filter(user_id, app_id)
    row = await db.fetchone(
        f"SELECT COUNT(*) AS total FROM {OWNED_PROFILES} WHERE {where}", params
    )
    return int(row["total"]) if row else 0


async def update_owned_profile(
    db: Database, profile_id: str, user_id: str, changes: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Set the given columns and return the profile, or None when not found."""
    unknown = set(changes) - set(UPDATABLE_COLUMNS)
    if unknown:
        raise ValueError(f"cannot update profile columns {sorted(unknown)}")
    if changes:
        assignments = ", ".join(f"{column} = ?" for column in changes)
        values = [_encode(column, value) for column, value in changes.items()]
        updated = await db.execute(
            f"UPDATE transcoding_profiles SET {assignments} WHERE id = ? AND"
            " app_id IN (SELECT id FROM apps WHERE user_id = ?)",
            (*values, profile_id, user_id),
        )
        if updated == 0:
            return None
    return await get_owned_profile(db, profile_id, user_id)


async def delete_owned_profile(db: Database, profile_id: str, user_id: str) -> bool:
    """Delete the profile; return False when the user has no such profile."""
    deleted = await db.execute(
        "DELETE FROM transcoding_profiles WHERE id = ? AND"
        " app_id IN (SELECT id FROM apps WHERE user_id = ?)",
        (profile_id, user_id),
    )
    return deleted > 0


async def streams_using_profile(
    db: Database, profile_id: str, app_id: str
) -> list[str]:
    """Return the ids of the app's streams whose settings select the profile.

    Only streams of the profile's own app can select it, because the API
    rejects a profile of another app in settings.transcoding_profile_id.
    """
    rows = await db.fetchall(
        "SELECT id FROM streams WHERE app_id = ?"
        " AND json_extract(settings, '$.transcoding_profile_id') = ?",
        (app_id, profile_id),
    )
    return [row["id"] for row in rows]


async def get_app_profile(
    db: Database, profile_id: str, app_id: str
) -> dict[str, Any] | None:
    """Return the profile if it belongs to ``app_id``, else None."""
    row = await db.fetchone(
        f"SELECT {PROFILE_COLUMNS} FROM transcoding_profiles"
        " WHERE transcoding_profiles.id = ? AND transcoding_profiles.app_id = ?",
        (profile_id, app_id),
    )
    return _decoded(row)
