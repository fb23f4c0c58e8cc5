"""Tests for the SQLite store: connection settings, migrations, restarts, queries."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from realcast_box.store import apps as app_store
from realcast_box.store import streams as stream_store
from realcast_box.store import users as user_store
from realcast_box.store.db import (
    Database,
    StoreError,
    apply_migrations,
    split_statements,
)
from realcast_box.store.ids import format_timestamp, new_id, parse_timestamp
from realcast_box.store.migrations import MIGRATIONS

STARTED_AT = datetime(2024, 12, 9, 10, 0, 0, tzinfo=UTC)


async def make_stream(db: Database, email: str = "owner@example.com") -> dict:
    user = await user_store.create_user(db, email, "Owner", "hash")
    app = await app_store.create_app(db, user["id"], "App", "", {})
    return await stream_store.create_stream(db, app["id"], "Stream", "", {"a": 1})


async def test_database_open_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "realcast.db"
    db = await Database.open(path)
    await db.close()
    assert path.is_file()


async def test_database_pragmas_set(database: Database) -> None:
    journal = await database.fetchone("PRAGMA journal_mode")
    foreign_keys = await database.fetchone("PRAGMA foreign_keys")
    synchronous = await database.fetchone("PRAGMA synchronous")
    busy_timeout = await database.fetchone("PRAGMA busy_timeout")
    assert journal == {"journal_mode": "wal"}
    assert foreign_keys == {"foreign_keys": 1}
    # 1 is NORMAL.
    assert synchronous == {"synchronous": 1}
    assert busy_timeout is not None
    assert busy_timeout["timeout"] > 0


async def test_migrations_set_user_version(database: Database) -> None:
    row = await database.fetchone("PRAGMA user_version")
    assert row == {"user_version": len(MIGRATIONS)}


async def test_migrations_create_tables(database: Database) -> None:
    rows = await database.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    )
    names = {row["name"] for row in rows}
    assert {"users", "apps", "streams"} <= names


async def test_migrations_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "realcast.db"
    db = await Database.open(path)
    await db.close()
    db = await Database.open(path)
    row = await db.fetchone("PRAGMA user_version")
    await db.close()
    assert row == {"user_version": len(MIGRATIONS)}


async def test_migrations_apply_twice_is_noop(database: Database) -> None:
    connection = database._open_connection()
    await apply_migrations(connection, MIGRATIONS)
    row = await database.fetchone("PRAGMA user_version")
    assert row == {"user_version": len(MIGRATIONS)}


async def test_migrations_new_entry_applied_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "realcast.db"
    db = await Database.open(path, migrations=MIGRATIONS[:1])
    await db.close()
    extended = [*MIGRATIONS, (len(MIGRATIONS) + 1, "CREATE TABLE extra (x INTEGER);")]
    db = await Database.open(path, migrations=extended)
    version = await db.fetchone("PRAGMA user_version")
    table = await db.fetchone("SELECT name FROM sqlite_master WHERE name = 'extra'")
    await db.close()
    assert version == {"user_version": len(extended)}
    assert table == {"name": "extra"}


async def test_migrations_failure_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "realcast.db"
    broken = [
        *MIGRATIONS,
        (
            len(MIGRATIONS) + 1,
            "CREATE TABLE half_done (x INTEGER); INSERT INTO missing VALUES (1);",
        ),
    ]
    with pytest.raises(StoreError, match=f"migration {len(MIGRATIONS) + 1} failed"):
        await Database.open(path, migrations=broken)
    db = await Database.open(path)
    version = await db.fetchone("PRAGMA user_version")
    table = await db.fetchone("SELECT name FROM sqlite_master WHERE name = 'half_done'")
    await db.close()
    assert version == {"user_version": len(MIGRATIONS)}
    assert table is None


async def test_migrations_newer_schema_rejected(tmp_path: Path) -> None:
    path = tmp_path / "realcast.db"
    db = await Database.open(path)
    await db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    await db.close()
    with pytest.raises(StoreError, match="newer than the latest known migration"):
        await Database.open(path)


async def test_migrations_bad_numbering_rejected(tmp_path: Path) -> None:
    gap = [(1, "CREATE TABLE a (x);"), (3, "CREATE TABLE b (x);")]
    with pytest.raises(StoreError, match="expected migration 2, found 3"):
        await Database.open(tmp_path / "realcast.db", migrations=gap)


def test_split_statements_keeps_semicolons_in_strings() -> None:
    script = "CREATE TABLE t (x TEXT);\nINSERT INTO t VALUES ('a;b');\n"
    statements = list(split_statements(script))
    assert statements == ["CREATE TABLE t (x TEXT);", "INSERT INTO t VALUES ('a;b');"]


def test_split_statements_incomplete_rejected() -> None:
    with pytest.raises(StoreError, match="incomplete SQL statement"):
        list(split_statements("INSERT INTO t VALUES ('unterminated"))


async def test_database_execute_returns_rowcount(database: Database) -> None:
    await database.execute("CREATE TABLE t (x INTEGER)")
    await database.execute("INSERT INTO t VALUES (1), (2), (3)")
    changed = await database.execute("UPDATE t SET x = x + 1 WHERE x >= 2")
    assert changed == 2


async def test_database_fetchone_missing_row_is_none(database: Database) -> None:
    row = await database.fetchone("SELECT id FROM users WHERE id = ?", ("nope",))
    assert row is None


async def test_database_closed_raises(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "realcast.db")
    await db.close()
    await db.close()
    with pytest.raises(StoreError, match="is closed"):
        await db.fetchall("SELECT 1")


async def test_database_writes_visible_to_other_connection(database: Database) -> None:
    stream = await make_stream(database)
    with sqlite3.connect(database.path) as other:
        row = other.execute(
            "SELECT title FROM streams WHERE id = ?", (stream["id"],)
        ).fetchone()
    assert row == ("Stream",)


async def test_database_data_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "realcast.db"
    db = await Database.open(path)
    stream = await make_stream(db)
    await db.close()

    db = await Database.open(path)
    reopened = await stream_store.get_stream(db, stream["id"])
    user = await user_store.get_user_by_email(db, "owner@example.com")
    await db.close()
    assert reopened == stream
    assert user is not None


def test_new_id_has_prefix_and_random_part() -> None:
    first = new_id("app")
    second = new_id("app")
    assert first.startswith("app_")
    assert len(first) == len("app_") + 16
    assert first != second


def test_format_timestamp_utc_with_z() -> None:
    moment = datetime(2024, 12, 9, 11, 0, 0, 999999, tzinfo=UTC)
    local = moment.astimezone(timezone(timedelta(hours=1)))
    assert format_timestamp(local) == "2024-12-09T11:00:00Z"


def test_format_timestamp_naive_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2024, 12, 9))


def test_parse_timestamp_round_trip() -> None:
    assert parse_timestamp(format_timestamp(STARTED_AT)) == STARTED_AT


async def test_users_duplicate_email_ignores_case(database: Database) -> None:
    await user_store.create_user(database, "Dev@Example.com", "", "hash")
    with pytest.raises(user_store.DuplicateEmail):
        await user_store.create_user(database, "dev@EXAMPLE.COM", "", "hash")


async def test_users_delete_cascades_to_apps_and_streams(database: Database) -> None:
    stream = await make_stream(database)
    user = await user_store.get_user_by_email(database, "owner@example.com")
    assert user is not None
    await user_store.delete_user(database, user["id"])
    assert await stream_store.get_stream(database, stream["id"]) is None
    assert await app_store.get_app(database, stream["app_id"], user["id"]) is None


async def test_apps_delete_returns_stream_ids(database: Database) -> None:
    stream = await make_stream(database)
    user = await user_store.get_user_by_email(database, "owner@example.com")
    assert user is not None
    deleted = await app_store.delete_app(database, stream["app_id"], user["id"])
    assert deleted == [stream["id"]]
    assert await stream_store.get_stream(database, stream["id"]) is None


async def test_apps_settings_decoded(database: Database) -> None:
    user = await user_store.create_user(database, "a@example.com", "", "hash")
    settings = {"nested": {"list": [1, 2.5, None, True]}, "text": "é"}
    app = await app_store.create_app(database, user["id"], "App", "", settings)
    stored = await app_store.get_app(database, app["id"], user["id"])
    assert stored is not None
    assert stored["settings"] == settings


async def test_streams_key_format(database: Database) -> None:
    stream = await make_stream(database)
    prefix = f"{stream['app_id']}_{stream['id']}_sk_"
    assert stream["stream_key"].startswith(prefix)
    assert len(stream["stream_key"]) - len(prefix) >= 24


async def test_streams_get_by_key_finds_stream(database: Database) -> None:
    stream = await make_stream(database)
    found = await stream_store.get_stream_by_key(database, stream["stream_key"])
    assert found is not None
    assert found["id"] == stream["id"]
    assert found["settings"] == {"a": 1}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),
        lambda key: key + "x",
        lambda key: key[: key.index("_sk_") + 4],
        lambda key: "",
        lambda key: "app_x_stream_y_sk_" + "z" * 32,
        lambda key: key.replace("_sk_", "_xx_"),
        lambda key: key + "é",
        lambda key: key * 10,
    ],
    ids=[
        "last-char",
        "appended",
        "no-random",
        "empty",
        "unknown-ids",
        "no-marker",
        "non-ascii",
        "too-long",
    ],
)
async def test_streams_get_by_key_wrong_key_is_none(database: Database, mangle) -> None:
    stream = await make_stream(database)
    assert (
        await stream_store.get_stream_by_key(database, mangle(stream["stream_key"]))
        is None
    )


async def test_streams_reset_key_invalidates_old_key(database: Database) -> None:
    stream = await make_stream(database)
    user = await user_store.get_user_by_email(database, "owner@example.com")
    assert user is not None
    updated = await stream_store.reset_owned_stream_key(
        database, stream["id"], user["id"]
    )
    assert updated is not None
    assert updated["stream_key"] != stream["stream_key"]
    assert await stream_store.get_stream_by_key(database, stream["stream_key"]) is None
    found = await stream_store.get_stream_by_key(database, updated["stream_key"])
    assert found is not None
    assert found["id"] == stream["id"]


async def test_streams_mark_live_sets_status(database: Database) -> None:
    stream = await make_stream(database)
    await stream_store.mark_stream_live(database, stream["id"], STARTED_AT)
    row = await stream_store.get_stream(database, stream["id"])
    assert row is not None
    assert row["status"] == "live"
    assert row["started_at"] == "2024-12-09T10:00:00Z"
    assert row["ended_at"] is None


async def test_streams_mark_offline_stores_duration(database: Database) -> None:
    stream = await make_stream(database)
    await stream_store.mark_stream_live(database, stream["id"], STARTED_AT)
    ended_at = STARTED_AT + timedelta(minutes=2, seconds=5)
    await stream_store.mark_stream_offline(database, stream["id"], ended_at)
    row = await stream_store.get_stream(database, stream["id"])
    assert row is not None
    assert row["status"] == "offline"
    assert row["ended_at"] == "2024-12-09T10:02:05Z"
    assert row["duration_seconds"] == 125


async def test_streams_mark_offline_twice_keeps_first_end(database: Database) -> None:
    stream = await make_stream(database)
    await stream_store.mark_stream_live(database, stream["id"], STARTED_AT)
    await stream_store.mark_stream_offline(
        database, stream["id"], STARTED_AT + timedelta(seconds=10)
    )
    await stream_store.mark_stream_offline(
        database, stream["id"], STARTED_AT + timedelta(seconds=99)
    )
    row = await stream_store.get_stream(database, stream["id"])
    assert row is not None
    assert row["duration_seconds"] == 10


async def test_streams_mark_offline_never_live_unchanged(database: Database) -> None:
    stream = await make_stream(database)
    await stream_store.mark_stream_offline(database, stream["id"], STARTED_AT)
    row = await stream_store.get_stream(database, stream["id"])
    assert row is not None
    assert row["status"] == "created"


async def test_streams_live_again_clears_last_end(database: Database) -> None:
    stream = await make_stream(database)
    await stream_store.mark_stream_live(database, stream["id"], STARTED_AT)
    await stream_store.mark_stream_offline(
        database, stream["id"], STARTED_AT + timedelta(seconds=10)
    )
    await stream_store.mark_stream_live(
        database, stream["id"], STARTED_AT + timedelta(hours=1)
    )
    row = await stream_store.get_stream(database, stream["id"])
    assert row is not None
    assert row["ended_at"] is None
    assert row["duration_seconds"] is None


async def test_streams_reset_live_streams_after_crash(tmp_path: Path) -> None:
    path = tmp_path / "realcast.db"
    db = await Database.open(path)
    live = await make_stream(db, "one@example.com")
    idle = await make_stream(db, "two@example.com")
    await stream_store.mark_stream_live(db, live["id"], STARTED_AT)
    await db.close()

    db = await Database.open(path)
    changed = await stream_store.reset_live_streams(
        db, STARTED_AT + timedelta(seconds=42)
    )
    live_row = await stream_store.get_stream(db, live["id"])
    idle_row = await stream_store.get_stream(db, idle["id"])
    await db.close()
    assert [row["id"] for row in changed] == [live["id"]]
    assert changed[0]["duration_seconds"] == 42
    assert live_row is not None
    assert live_row["status"] == "offline"
    assert live_row["duration_seconds"] == 42
    assert idle_row is not None
    assert idle_row["status"] == "created"


def test_streams_current_duration_cases() -> None:
    now = STARTED_AT + timedelta(seconds=90)
    live = {"status": "live", "started_at": "2024-12-09T10:00:00Z"}
    offline = {"status": "offline", "started_at": "x", "duration_seconds": 7}
    created = {"status": "created", "started_at": None, "duration_seconds": None}
    assert stream_store.current_duration(live, now) == 90
    assert stream_store.current_duration(offline, now) == 7
    assert stream_store.current_duration(created, now) == 0
