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
    (
        2,
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            -- The public half of the credentials, sent as the Basic user name.
            api_key TEXT NOT NULL UNIQUE,
            -- HMAC-SHA256 of the secret under the box's API key hash secret;
            -- the secret itself is never stored.
            secret_hash TEXT NOT NULL,
            -- JSON array of scope names.
            scopes TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            last_used_at TEXT
        );
        CREATE INDEX api_keys_by_app ON api_keys (app_id, created_at);
        """,
    ),
    (
        3,
        """
        -- No foreign keys: entries outlive the users, apps and keys they name,
        -- so that deleting an app leaves its history readable.
        CREATE TABLE audit_logs (
            id TEXT NOT NULL UNIQUE,
            user_id TEXT,
            app_id TEXT,
            api_key_id TEXT,
            action TEXT NOT NULL,
            resource_type TEXT,
            resource_id TEXT,
            ip_address TEXT,
            user_agent TEXT,
            status TEXT NOT NULL CHECK (status IN ('success', 'failure')),
            security_event INTEGER NOT NULL DEFAULT 0
                CHECK (security_event IN (0, 1)),
            detail TEXT NOT NULL DEFAULT '',
            timestamp TEXT NOT NULL
        );
        CREATE INDEX audit_logs_by_user ON audit_logs (user_id, timestamp);
        CREATE INDEX audit_logs_by_app ON audit_logs (app_id, timestamp);
        CREATE INDEX audit_logs_by_time ON audit_logs (timestamp);
        """,
    ),
    (
        4,
        """
        -- Revocation of a stream's playback tokens: each revoke raises the
        -- generation, and tokens and playback sessions carry the generation
        -- they were issued under. A stream without a row is at generation 0.
        CREATE TABLE playback_revocations (
            stream_id TEXT PRIMARY KEY
                REFERENCES streams (id) ON DELETE CASCADE,
            generation INTEGER NOT NULL,
            revoked_at TEXT NOT NULL
        );
        """,
    ),
    (
        5,
        """
        -- Adds the 'reconnecting' status. SQLite cannot change a CHECK
        -- constraint in place, and rebuilding the table would drop it, which
        -- deletes the rows that reference streams (foreign keys are on during
        -- migrations). A new column replaces the old one instead.
        DROP INDEX streams_by_status;
        ALTER TABLE streams ADD COLUMN new_status TEXT NOT NULL DEFAULT 'created'
            CHECK (new_status IN ('created', 'live', 'reconnecting', 'offline'));
        UPDATE streams SET new_status = status;
        ALTER TABLE streams DROP COLUMN status;
        ALTER TABLE streams RENAME COLUMN new_status TO status;
        CREATE INDEX streams_by_status ON streams (status);
        """,
    ),
    (
        6,
        """
        -- Transcoding ladders. qualities is a JSON array of
        -- {name, width, height, bitrate, fps} objects, bitrates in kbps.
        CREATE TABLE transcoding_profiles (
            id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            qualities TEXT NOT NULL,
            audio_bitrate INTEGER NOT NULL,
            enable_gpu_acceleration INTEGER NOT NULL
                CHECK (enable_gpu_acceleration IN (0, 1)),
            created_at TEXT NOT NULL
        );
        CREATE INDEX transcoding_profiles_by_app
            ON transcoding_profiles (app_id, created_at);
        """,
    ),
    (
        7,
        """
        -- Webhooks and their outbox. events is a JSON array of event types.
        -- The secret is stored as given, because signing needs it.
        CREATE TABLE webhooks (
            id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
            url TEXT NOT NULL,
            events TEXT NOT NULL,
            secret TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'disabled')),
            -- Deliveries in a row that failed after their last attempt.
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            disabled_reason TEXT,
            disabled_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX webhooks_by_app ON webhooks (app_id, created_at);

        -- One row per event and webhook. body is the exact JSON sent, so
        -- every attempt and redelivery sends the same bytes.
        -- next_attempt_at is in Unix seconds, NULL once delivered or failed.
        CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            body TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'delivered', 'failed')),
            attempt_count INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            created_at TEXT NOT NULL,
            last_attempt_at TEXT,
            last_status_code INTEGER,
            last_error TEXT
        );
        CREATE INDEX webhook_deliveries_due
            ON webhook_deliveries (status, next_attempt_at);
        CREATE INDEX webhook_deliveries_by_webhook
            ON webhook_deliveries (webhook_id, created_at);

        CREATE TABLE webhook_attempts (
            id INTEGER PRIMARY KEY,
            delivery_id TEXT NOT NULL
                REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
            attempt INTEGER NOT NULL,
            attempted_at TEXT NOT NULL,
            status_code INTEGER,
            latency_ms INTEGER NOT NULL,
            error TEXT,
            -- The first 1 KB of the response body, as text.
            response_body TEXT
        );
        CREATE INDEX webhook_attempts_by_delivery
            ON webhook_attempts (delivery_id, attempt);
        """,
    ),
    (
        8,
        """
        -- Recordings of live sessions (source 'live') and of pulled URLs
        -- (source 'pull'). The file is recordings/<id>.mp4 below the data
        -- directory once completed, and recordings/<id>.part.mp4 (fragmented
        -- MP4) while recording. duration is in seconds, file_size in bytes.
        CREATE TABLE recordings (
            id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
            stream_id TEXT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
            title TEXT NOT NULL,
            description TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('live', 'pull')),
            stream_url TEXT,
            status TEXT NOT NULL DEFAULT 'recording'
                CHECK (status IN ('recording', 'processing', 'completed', 'failed')),
            failure_reason TEXT,
            duration REAL,
            file_size INTEGER,
            has_thumbnail INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            completed_at TEXT
        );
        CREATE INDEX recordings_by_app ON recordings (app_id, created_at);
        CREATE INDEX recordings_by_stream ON recordings (stream_id, status);
        -- At most one active recording per stream.
        CREATE UNIQUE INDEX recordings_one_active ON recordings (stream_id)
            WHERE status = 'recording';
        """,
    ),
    (
        9,
        """
        -- Chat messages. seq orders a stream's messages in the order the box
        -- accepted them; id is the random id that clients see. A deleted
        -- message keeps its row (deleted_at set) and leaves history.
        CREATE TABLE chat_messages (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            stream_id TEXT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
            viewer_id TEXT NOT NULL,
            display_name TEXT NOT NULL,
            role TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at TEXT NOT NULL,
            deleted_at TEXT,
            deleted_by TEXT
        );
        CREATE INDEX chat_messages_by_stream ON chat_messages (stream_id, seq);

        -- One ban per viewer and stream; expires_at NULL means permanent.
        CREATE TABLE chat_bans (
            id TEXT PRIMARY KEY,
            stream_id TEXT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
            viewer_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            UNIQUE (stream_id, viewer_id)
        );
        """,
    ),
]
