"""The audit_logs table and its batching writer.

Handlers never wait for an audit write: they hand entries to ``AuditWriter``,
whose bounded queue one background task drains into multi-row INSERTs. When
the queue is full an entry is dropped, counted and logged, so a flood of
failed logins can never stall the API or grow memory without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp, new_id, utc_now

logger = logging.getLogger(__name__)

ENTRY_COLUMNS = (
    "id",
    "user_id",
    "app_id",
    "api_key_id",
    "action",
    "resource_type",
    "resource_id",
    "ip_address",
    "user_agent",
    "status",
    "security_event",
    "detail",
    "timestamp",
)
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_BATCH_SIZE = 200
# Log the first dropped entry, then one line per this many more.
DROP_LOG_INTERVAL = 1000


@dataclass(frozen=True)
class AuditEntry:
    """One audit log row; ``security_event`` marks entries listed as such."""

    action: str
    status: str = "success"
    user_id: str | None = None
    app_id: str | None = None
    api_key_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    security_event: bool = False
    detail: str = ""
    id: str = field(default_factory=lambda: new_id("log"))
    timestamp: str = field(default_factory=lambda: format_timestamp(utc_now()))

    def __post_init__(self) -> None:
        if self.status not in ("success", "failure"):
            raise ValueError(f"invalid audit status {self.status!r}")


def entry_row(entry: AuditEntry) -> tuple[Any, ...]:
    values = dataclasses.asdict(entry)
    values["security_event"] = int(entry.security_event)
    return tuple(values[column] for column in ENTRY_COLUMNS)


async def insert_entries(db: Database, entries: list[AuditEntry]) -> None:
    """Insert ``entries`` with one statement, so in one transaction."""
    if not entries:
        return
    placeholders = "(" + ", ".join("?" * len(ENTRY_COLUMNS)) + ")"
    params = [value for entry in entries for value in entry_row(entry)]
    await db.execute(
        f"INSERT INTO audit_logs ({', '.join(ENTRY_COLUMNS)}) VALUES "
        + ", ".join([placeholders] * len(entries)),
        params,
    )


@dataclass(frozen=True)
class AuditFilter:
    """Conditions on the entries a listing returns; every condition given must hold."""

    user_id: str | None = None
    app_id: str | None = None
    since: datetime | None = None
    security_only: bool = False
    # An exact action name, or with ``action_is_prefix`` the start of one.
    action: str | None = None
    action_is_prefix: bool = False

    def where(self) -> tuple[str, list[Any]]:
        conditions = ["1 = 1"]
        params: list[Any] = []
        if self.user_id is not None:
            conditions.append("user_id = ?")
            params.append(self.user_id)
        if self.app_id is not None:
            conditions.append("app_id = ?")
            params.append(self.app_id)
        if self.since is not None:
            conditions.append("timestamp >= ?")
            params.append(format_timestamp(self.since))
        if self.security_only:
            conditions.append("security_event = 1")
        if self.action is not None and self.action_is_prefix:
            # substr, not LIKE, because "_" in action names is a LIKE wildcard.
            conditions.append("substr(action, 1, ?) = ?")
            params.extend([len(self.action), self.action])
        elif self.action is not None:
            conditions.append("action = ?")
            params.append(self.action)
        return " AND ".join(conditions), params


async def list_entries(
    db: Database, selection: AuditFilter, *, limit: int, skip: int
) -> list[dict[str, Any]]:
    """Return matching entries, newest first; entries of one second by insertion."""
    where, params = selection.where()
    rows = await db.fetchall(
        f"SELECT {', '.join(ENTRY_COLUMNS)} FROM audit_logs WHERE {where}"
        " ORDER BY timestamp DESC, rowid DESC LIMIT ? OFFSET ?",
        (*params, limit, skip),
    )
    for row in rows:
        row["security_event"] = bool(row["security_event"])
    return rows


async def count_entries(db: Database, selection: AuditFilter) -> int:
    where, params = selection.where()
    row = await db.fetchone(
        f"SELECT COUNT(*) AS total FROM audit_logs WHERE {where}", params
    )
    return int(row["total"]) if row else 0


async def prune_entries(db: Database, older_than: datetime) -> int:
    """Delete entries from before ``older_than`` and return how many went."""
    return await db.execute(
        "DELETE FROM audit_logs WHERE timestamp < ?", (format_timestamp(older_than),)
    )


class AuditWriter:
    """Queues audit entries and writes them in batches from one task.

    Call ``start`` once the event loop runs and ``close`` before the database
    closes. ``submit`` never blocks. ``flush`` waits until every entry
    submitted so far is written (or failed and logged).
    """

    def __init__(
        self,
        db: Database,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self._db = db
        self._queue: asyncio.Queue[AuditEntry] = asyncio.Queue(queue_size)
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self.dropped = 0
        self.failed = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    def submit(self, entry: AuditEntry) -> bool:
        """Queue ``entry``; return False (and count it) when the queue is full."""
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % DROP_LOG_INTERVAL == 1:
                logger.warning(
                    "audit queue full (%d entries): dropped entry %s for %s;"
                    " %d dropped so far",
                    self._queue.maxsize,
                    entry.action,
                    entry.user_id or "no user",
                    self.dropped,
                )
            return False
        return True

    async def flush(self) -> None:
        """Wait until every queued entry is written; writes them here if stopped."""
        if self._task is None or self._task.done():
            await self._write_batch(self._take_batch())
            while not self._queue.empty():
                await self._write_batch(self._take_batch())
            return
        await self._queue.join()

    async def close(self) -> None:
        """Write what is queued, then stop the background task."""
        await self.flush()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A batch that was being written when the task was cancelled, and
        # entries submitted meanwhile.
        if self._writing is not None:
            await self._writing
        await self.flush()

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first, *self._take_batch(self._batch_size - 1)]
            # Shielded, so that cancelling the task never abandons a batch
            # half way: close() waits for it instead.
            self._writing = asyncio.ensure_future(self._write_batch(batch))
            await asyncio.shield(self._writing)

    def _take_batch(self, size: int | None = None) -> list[AuditEntry]:
        limit = self._batch_size if size is None else size
        batch: list[AuditEntry] = []
        while not self._queue.empty() and len(batch) < limit:
            batch.append(self._queue.get_nowait())
        return batch

    async def _write_batch(self, batch: list[AuditEntry]) -> None:
        try:
            await insert_entries(self._db, batch)
        except Exception:
            self.failed += len(batch)
            logger.exception("failed to write %d audit entries", len(batch))
        finally:
            for _ in batch:
                self._queue.task_done()
