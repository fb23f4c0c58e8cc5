"""The SQLite database: one aiosqlite connection, WAL mode, migrations at open.

Every query goes through the one connection, whose worker thread runs them
in order, so there is exactly one writer. The connection is in autocommit
mode (``isolation_level=None``), so each ``execute`` is its own transaction,
committed when the call returns and so before any API response is sent.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from realcast_box.errors import RealcastError
from realcast_box.store.migrations import MIGRATIONS

logger = logging.getLogger(__name__)

# How long a statement waits for a lock held by another connection (a backup
# or the sqlite3 shell) before it fails with "database is locked".
BUSY_TIMEOUT_MS = 5000

Params = Sequence[Any] | dict[str, Any]


class StoreError(RealcastError):
    """The database cannot be opened, migrated or used."""


class Database:
    """The box's SQLite database, opened with ``await Database.open(path)``.

    Always close it, also when start-up fails later: aiosqlite's worker
    thread is not a daemon thread, so an open Database keeps the process from
    exiting.
    """

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._connection: aiosqlite.Connection | None = connection
        self.path = path

    @classmethod
    async def open(
        cls, path: Path, *, migrations: Sequence[tuple[int, str]] = MIGRATIONS
    ) -> Database:
        """Open (or create) the database at ``path`` and apply pending migrations.

        Creates missing parent directories. Raises StoreError when the file
        cannot be opened or is not a SQLite database, when a migration fails
        (that migration is rolled back), or when the file's schema is newer
        than ``migrations``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        try:
            connection.row_factory = aiosqlite.Row
            try:
                await _configure(connection, path)
            except sqlite3.OperationalError as exc:
                # Permissions, locks or I/O raise it, so the file may be fine.
                raise StoreError(f"cannot open database {path}: {exc}") from None
            except sqlite3.DatabaseError as exc:
                raise StoreError(
                    f"cannot open database {path}: {exc}; move the file away and"
                    " restore a backup with realcast-box restore"
                ) from None
            await apply_migrations(connection, migrations)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, path)

    async def close(self) -> None:
        """Close the connection; safe to call twice. Later queries raise StoreError."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.execute("PRAGMA optimize")
        finally:
            await connection.close()

    @property
    def total_changes(self) -> int:
        """Rows inserted, updated or deleted through this connection since it opened.

        Any committed write through this Database raises it, so a cache of
        query results stays valid while it is unchanged. Writes by other
        processes (the sqlite3 shell, a CLI command) do not raise it.
        """
        return self._open_connection().total_changes

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement, commit it and return the number of rows it changed."""
        async with self._open_connection().execute(sql, params) as cursor:
            return cursor.rowcount

    async def fetchone(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        """Run a query and return its first row as a dict, or None."""
        async with self._open_connection().execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return None if row is None else dict(row)

    async def fetchall(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Run a query and return every row as a dict."""
        rows = await self._open_connection().execute_fetchall(sql, params)
        return [dict(row) for row in rows]

    def _open_connection(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise StoreError(f"database {self.path} is closed")
        return self._connection


async def _configure(connection: aiosqlite.Connection, path: Path) -> None:
    async with connection.execute("PRAGMA journal_mode=WAL") as cursor:
        row = await cursor.fetchone()
    mode = str(row[0]).lower() if row else "unknown"
    if mode != "wal":
        # Some file systems (network shares) cannot hold the WAL index.
        logger.warning("database %s: WAL mode unavailable, using %s", path, mode)
    await connection.execute("PRAGMA foreign_keys=ON")
    await connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    await connection.execute("PRAGMA synchronous=NORMAL")


async def apply_migrations(
    connection: aiosqlite.Connection, migrations: Sequence[tuple[int, str]]
) -> None:
    """Apply each migration newer than the database's user_version, in order.

    Each migration and its user_version update run in one transaction, so a
    failed migration leaves the schema as it was. Applying twice is a no-op.
    """
    _check_numbering(migrations)
    latest = migrations[-1][0] if migrations else 0
    current = await _user_version(connection)
    if current > latest:
        raise StoreError(
            f"database schema version {current} is newer than the latest known "
            f"migration {latest}; run a newer RealCast Box on this database"
        )
    for number, sql in migrations:
        if number > current:
            await _apply_one(connection, number, sql)


async def _apply_one(connection: aiosqlite.Connection, number: int, sql: str) -> None:
    # BEGIN IMMEDIATE takes the write lock first, so a second process opening
    # the same file waits here and then sees the new user_version.
    await connection.execute("BEGIN IMMEDIATE")
    try:
        if await _user_version(connection) < number:
            for statement in split_statements(sql):
                await connection.execute(statement)
            await connection.execute(f"PRAGMA user_version = {number:d}")
        await connection.execute("COMMIT")
    except BaseException as exc:
        await connection.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"database migration {number} failed: {exc}") from exc
        raise
    logger.info("database migration %d applied", number)


async def _user_version(connection: aiosqlite.Connection) -> int:
    async with connection.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _check_numbering(migrations: Sequence[tuple[int, str]]) -> None:
    for expected, (number, _sql) in enumerate(migrations, start=1):
        if number != expected:
            raise StoreError(
                f"invalid migration list: expected migration {expected}, found {number}"
            )


def split_statements(sql: str) -> Iterator[str]:
    """Split a SQL script into complete statements (semicolons in strings stay)."""
    buffer = ""
    for piece in sql.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if statement.strip(";").strip():
                yield statement
    if buffer.strip(" \n\t;"):
        raise StoreError(f"incomplete SQL statement in migration: {buffer.strip()!r}")
