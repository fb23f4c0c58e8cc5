"""Queries for playback access: a stream's policy inputs and token revocation.

Unscoped: the HLS routes call ``get_playback_access`` for any stream id, and
the API checks ownership before it calls ``revoke_playback_tokens``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp


@dataclass(frozen=True)
class PlaybackAccess:
    """Playback settings of one stream that the HLS routes check requests against."""

    stream_id: str
    app_settings: dict[str, Any]
    stream_settings: dict[str, Any]
    generation: int


async def get_playback_access(db: Database, stream_id: str) -> PlaybackAccess | None:
    """Return the settings and revocation generation of a stream, or None."""
    row = await db.fetchone(
        "SELECT streams.settings AS stream_settings, apps.settings AS app_settings,"
        " COALESCE(playback_revocations.generation, 0) AS generation"
        " FROM streams JOIN apps ON apps.id = streams.app_id"
        " LEFT JOIN playback_revocations"
        " ON playback_revocations.stream_id = streams.id"
        " WHERE streams.id = ?",
        (stream_id,),
    )
    if row is None:
        return None
    return PlaybackAccess(
        stream_id=stream_id,
        app_settings=json.loads(row["app_settings"]),
        stream_settings=json.loads(row["stream_settings"]),
        generation=int(row["generation"]),
    )


async def get_generation(db: Database, stream_id: str) -> int:
    """Return the stream's revocation generation: 0 until its first revoke."""
    row = await db.fetchone(
        "SELECT generation FROM playback_revocations WHERE stream_id = ?",
        (stream_id,),
    )
    return int(row["generation"]) if row else 0


async def revoke_playback_tokens(
    db: Database, stream_id: str, revoked_at: datetime
) -> int:
    """Raise the stream's revocation generation and return the new one."""
    await db.execute(
        "INSERT INTO playback_revocations (stream_id, generation, revoked_at)"
        " VALUES (?, 1, ?) ON CONFLICT (stream_id) DO UPDATE"
        " SET generation = generation + 1, revoked_at = excluded.revoked_at",
        (stream_id, format_timestamp(revoked_at)),
    )
    return await get_generation(db, stream_id)
