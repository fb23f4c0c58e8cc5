"""Numbered, forward-only schema migrations.

Each entry is (number, sql). Numbers start at 1 and increase by one, and a
released entry is never edited: a schema change is a new entry at the end.
The database's ``PRAGMA user_version`` is the number of the last migration
applied, so each one runs exactly once (see db.apply_migrations).
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE users (
            id TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            -- Lower-cased email: makes duplicates case-insensitive.
            email_key TEXT NOT NULL UNIQUE,
            full_name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at TEXT NOT NULL
        );

        CREATE TABLE apps (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            settings TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX apps_by_user ON apps (user_id, created_at);

        CREATE TABLE streams (
            id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
            title TEXT NOT NULL,
            description TEXT NOT NULL,
            settings TEXT NOT NULL,
            stream_key TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL DEFAULT 'created'
                CHECK (status IN ('created', 'live', 'offline')),
            created_at TEXT NOT NULL,
            started_at TEXT,
            ended_at TEXT,
            duration_seconds INTEGER
        );
        CREATE INDEX streams_by_app ON streams (app_id, created_at);
        CREATE INDEX streams_by_status ON streams (status);
        """,
    ),
]
