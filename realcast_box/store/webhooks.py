"""Queries on the webhooks, webhook_deliveries and webhook_attempts tables.

Functions named ``*_owned_*`` or taking ``user_id`` are scoped to webhooks
of that user's apps (the API uses these). The others are unscoped, for the
outbox and the dispatcher.

The database connection commits each statement on its own, so every change
that must not be split is one statement: fanning an event out to the
webhooks that subscribe to it is a single INSERT ... SELECT.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp, new_id, utc_now

WEBHOOK_COLUMNS = (
    "webhooks.id, webhooks.app_id, webhooks.url, webhooks.events,"
    " webhooks.status, webhooks.consecutive_failures, webhooks.disabled_reason,"
    " webhooks.disabled_at, webhooks.created_at, webhooks.updated_at"
)
DELIVERY_COLUMNS = (
    "webhook_deliveries.id, webhook_deliveries.webhook_id,"
    " webhook_deliveries.event_id, webhook_deliveries.event_type,"
    " webhook_deliveries.status, webhook_deliveries.attempt_count,"
    " webhook_deliveries.next_attempt_at, webhook_deliveries.created_at,"
    " webhook_deliveries.last_attempt_at, webhook_deliveries.last_status_code,"
    " webhook_deliveries.last_error"
)
ATTEMPT_COLUMNS = (
    "delivery_id, attempt, attempted_at, status_code, latency_ms, error, response_body"
)
OWNED = "webhooks.app_id IN (SELECT apps.id FROM apps WHERE apps.user_id = ?)"
UPDATABLE_COLUMNS = ("url", "events", "secret", "status")
DELIVERY_STATUSES = ("pending", "delivered", "failed")
# A delivery id in SQL: "dlv_" and 16 random hex digits, as new_id("dlv").
_SQL_DELIVERY_ID = "'dlv_' || lower(hex(randomblob(8)))"


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["events"] = json.loads(row["events"])
    return row


async def create_webhook(
    db: Database, app_id: str, url: str, events: list[str], secret: str
) -> dict[str, Any]:
    """Insert an active webhook and return its row (without the secret)."""
    now = format_timestamp(utc_now())
    webhook = {
        "id": new_id("webhook"),
        "app_id": app_id,
        "url": url,
        "events": list(events),
        "status": "active",
        "consecutive_failures": 0,
        "disabled_reason": None,
        "disabled_at": None,
        "created_at": now,
        "updated_at": now,
    }
    await db.execute(
        "INSERT INTO webhooks (id, app_id, url, events, secret, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (webhook["id"], app_id, url, json.dumps(events), secret, now, now),
    )
    return webhook


async def get_owned_webhook(
    db: Database, webhook_id: str, user_id: str
) -> dict[str, Any] | None:
    """Return the webhook if it belongs to one of ``user_id``'s apps, else None."""
    row = await db.fetchone(
        f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhooks.id = ? AND {OWNED}",
        (webhook_id, user_id),
    )
    return _decoded(row)


def _owned_filter(user_id: str, app_id: str | None) -> tuple[str, list[Any]]:
    where = OWNED
    params: list[Any] = [user_id]
    if app_id is not None:
        where += " AND webhooks.app_id = ?"
        params.append(app_id)
    return where, params


async def list_owned_webhooks(
    db: Database, user_id: str, *, app_id: str | None, limit: int, skip: int
) -> list[dict[str, Any]]:
    """Return the user's webhooks (of one app if ``app_id``), newest first."""
    where, params = _owned_filter(user_id, app_id)
    rows = await db.fetchall(
        f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE {where}"
        " ORDER BY webhooks.created_at DESC, webhooks.rowid DESC LIMIT ? OFFSET ?",
        (*params, limit, skip),
    )
    return [row for row in map(_decoded, rows) if row is not None]


async def count_owned_webhooks(
    db: Database, user_id: str, *, app_id: str | None
) -> int:
    where, params = _owned_filter(user_id, app_id)
    row = await db.fetchone(
        f"SELECT COUNT(*) AS total FROM webhooks WHERE {where}", params
    )
    return int(row["total"]) if row else 0


async def update_owned_webhook(
    db: Database, webhook_id: str, user_id: str, changes: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Apply ``changes`` and return the updated webhook, or None if not found.

    Setting ``status`` to "active" also clears the failure count and the
    reason the webhook was disabled.
    """
    assignments = ["updated_at = ?"]
    params: list[Any] = [format_timestamp(utc_now())]
    for column in UPDATABLE_COLUMNS:
        if column not in changes:
            continue
        value = changes[column]
        assignments.append(f"{column} = ?")
        params.append(json.dumps(value) if column == "events" else value)
    if changes.get("status") == "active":
        assignments.append(
            "consecutive_failures = 0, disabled_reason = NULL, disabled_at = NULL"
        )
    elif changes.get("status") == "disabled":
        assignments.append(
            "disabled_reason = 'disabled by a user', disabled_at = ?,"
            " consecutive_failures = 0"
        )
        params.append(format_timestamp(utc_now()))
    updated = await db.execute(
        f"UPDATE webhooks SET {', '.join(assignments)}"
        f" WHERE webhooks.id = ? AND {OWNED}",
        (*params, webhook_id, user_id),
    )
    if not updated:
        return None
    return await get_owned_webhook(db, webhook_id, user_id)


async def delete_owned_webhook(db: Database, webhook_id: str, user_id: str) -> bool:
    """Delete the webhook with its deliveries; return whether the user had it."""
    deleted = await db.execute(
        f"DELETE FROM webhooks WHERE webhooks.id = ? AND {OWNED}",
        (webhook_id, user_id),
    )
    return deleted > 0


# --- the outbox ---------------------------------------------------------------


async def enqueue_event(
    db: Database,
    *,
    event_id: str,
    event_type: str,
    app_id: str,
    body: str,
    due_at: float,
    webhook_id: str | None = None,
) -> int:
    """Add one pending delivery per active webhook of ``app_id`` for the event.

    Without ``webhook_id``, the webhooks whose events list ``event_type``
    get one. With it, that webhook alone gets one, whatever its events (a
    test event). Returns the number of deliveries added.
    """
    params: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "app_id": app_id,
        "body": body,
        "due_at": due_at,
        "created_at": format_timestamp(utc_now()),
        "webhook_id": webhook_id,
    }
    if webhook_id is None:
        target = (
            "EXISTS (SELECT 1 FROM json_each(webhooks.events)"
            " WHERE json_each.value = :event_type)"
        )
    else:
        target = "webhooks.id = :webhook_id"
    return await db.execute(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type,"
        " body, next_attempt_at, created_at)"
        f" SELECT {_SQL_DELIVERY_ID}, webhooks.id, :event_id, :event_type, :body,"
        " :due_at, :created_at FROM webhooks"
        " WHERE webhooks.app_id = :app_id AND webhooks.status = 'active'"
        f" AND {target}",
        params,
    )


async def copy_delivery(
    db: Database, delivery_id: str, webhook_id: str, due_at: float
) -> dict[str, Any] | None:
    """Add a pending delivery of the same event and body; return it, or None."""
    new_delivery_id = new_id("dlv")
    added = await db.execute(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type,"
        " body, next_attempt_at, created_at)"
        " SELECT ?, webhook_id, event_id, event_type, body, ?, ?"
        " FROM webhook_deliveries WHERE id = ? AND webhook_id = ?",
        (
            new_delivery_id,
            due_at,
            format_timestamp(utc_now()),
            delivery_id,
            webhook_id,
        ),
    )
    if not added:
        return None
    return await get_delivery(db, webhook_id, new_delivery_id)


async def get_delivery(
    db: Database, webhook_id: str, delivery_id: str
) -> dict[str, Any] | None:
    """Return a delivery of ``webhook_id`` with its ``attempts``, or None."""
    row = await db.fetchone(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries"
        " WHERE webhook_deliveries.id = ? AND webhook_deliveries.webhook_id = ?",
        (delivery_id, webhook_id),
    )
    if row is None:
        return None
    await _attach_attempts(db, [row])
    return row


async def get_delivery_of_event(
    db: Database, webhook_id: str, event_id: str
) -> dict[str, Any] | None:
    """Return the newest delivery of ``event_id`` to ``webhook_id``, or None."""
    row = await db.fetchone(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries"
        " WHERE webhook_deliveries.webhook_id = ?"
        " AND webhook_deliveries.event_id = ?"
        " ORDER BY webhook_deliveries.rowid DESC LIMIT 1",
        (webhook_id, event_id),
    )
    if row is None:
        return None
    await _attach_attempts(db, [row])
    return row


async def list_deliveries(
    db: Database, webhook_id: str, *, status: str | None, limit: int, skip: int
) -> list[dict[str, Any]]:
    """Return the webhook's deliveries, newest first, each with its ``attempts``."""
    where, params = _delivery_filter(webhook_id, status)
    rows = await db.fetchall(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {where}"
        " ORDER BY webhook_deliveries.created_at DESC, webhook_deliveries.rowid DESC"
        " LIMIT ? OFFSET ?",
        (*params, limit, skip),
    )
    await _attach_attempts(db, rows)
    return rows


async def count_deliveries(db: Database, webhook_id: str, *, status: str | None) -> int:
    where, params = _delivery_filter(webhook_id, status)
    row = await db.fetchone(
        f"SELECT COUNT(*) AS total FROM webhook_deliveries WHERE {where}", params
    )
    return int(row["total"]) if row else 0


def _delivery_filter(webhook_id: str, status: str | None) -> tuple[str, list[Any]]:
    where = "webhook_deliveries.webhook_id = ?"
    params: list[Any] = [webhook_id]
    if status is not None:
        where += " AND webhook_deliveries.status = ?"
        params.append(status)
    return where, params


async def _attach_attempts(db: Database, deliveries: list[dict[str, Any]]) -> None:
    for delivery in deliveries:
        delivery["attempts"] = []
    if not deliveries:
        return
    by_id = {delivery["id"]: delivery for delivery in deliveries}
    placeholders = ", ".join("?" * len(by_id))
    rows = await db.fetchall(
        f"SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts"
        f" WHERE delivery_id IN ({placeholders}) ORDER BY delivery_id, attempt",
        list(by_id),
    )
    for row in rows:
        by_id[row.pop("delivery_id")]["attempts"].append(row)


# --- the dispatcher -----------------------------------------------------------


def _not_in(column: str, values: Iterable[str]) -> tuple[str, list[str]]:
    values = list(values)
    if not values:
        return "", []
    return f" AND {column} NOT IN ({', '.join('?' * len(values))})", values


async def due_webhook_ids(
    db: Database, now: float, *, busy: Iterable[str], limit: int
) -> list[str]:
    """Return active webhooks, other than ``busy``, with a delivery due by ``now``."""
    skip, skip_params = _not_in("webhook_deliveries.webhook_id", busy)
    rows = await db.fetchall(
        "SELECT DISTINCT webhook_deliveries.webhook_id FROM webhook_deliveries"
        " JOIN webhooks ON webhooks.id = webhook_deliveries.webhook_id"
        " WHERE webhook_deliveries.status = 'pending'"
        " AND webhook_deliveries.next_attempt_at <= ?"
        f" AND webhooks.status = 'active'{skip} LIMIT ?",
        (now, *skip_params, limit),
    )
    return [row["webhook_id"] for row in rows]


async def next_due_time(db: Database, *, busy: Iterable[str]) -> float | None:
    """Return when the next pending delivery of an idle active webhook is due."""
    skip, skip_params = _not_in("webhook_deliveries.webhook_id", busy)
    row = await db.fetchone(
        "SELECT MIN(webhook_deliveries.next_attempt_at) AS due FROM webhook_deliveries"
        " JOIN webhooks ON webhooks.id = webhook_deliveries.webhook_id"
        " WHERE webhook_deliveries.status = 'pending'"
        f" AND webhooks.status = 'active'{skip}",
        skip_params,
    )
    return None if row is None or row["due"] is None else float(row["due"])


async def count_pending_deliveries(db: Database) -> int:
    """Return the number of deliveries in the outbox that are not finished yet."""
    row = await db.fetchone(
        "SELECT COUNT(*) AS pending FROM webhook_deliveries WHERE status = 'pending'"
    )
    return 0 if row is None else int(row["pending"])


async def next_due_delivery(
    db: Database, webhook_id: str, now: float
) -> dict[str, Any] | None:
    """Return the webhook's earliest delivery due by ``now``, with url and secret."""
    return await db.fetchone(
        "SELECT webhook_deliveries.id, webhook_deliveries.event_id,"
        " webhook_deliveries.event_type, webhook_deliveries.body,"
        " webhook_deliveries.attempt_count, webhooks.url, webhooks.secret,"
        " webhooks.app_id FROM webhook_deliveries"
        " JOIN webhooks ON webhooks.id = webhook_deliveries.webhook_id"
        " WHERE webhook_deliveries.webhook_id = ?"
        " AND webhook_deliveries.status = 'pending'"
        " AND webhook_deliveries.next_attempt_at <= ?"
        " AND webhooks.status = 'active'"
        " ORDER BY webhook_deliveries.next_attempt_at, webhook_deliveries.rowid"
        " LIMIT 1",
        (webhook_id, now),
    )


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt of a delivery returned, and what follows from it.

    ``next_attempt_at`` is None when no attempt follows. Then ``delivered``
    is True for a success and False for a final failure.
    """

    delivery_id: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_body: str | None
    delivered: bool
    next_attempt_at: float | None


async def record_attempt(db: Database, record: AttemptRecord) -> bool:
    """Log the attempt and update its delivery; return whether the delivery exists.

    The log row is written first: a crash between the two writes leaves the
    delivery pending, so it is attempted again (at least once).
    """
    attempted_at = format_timestamp(record.attempted_at)
    try:
        await db.execute(
            f"INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.delivery_id,
                record.attempt,
                attempted_at,
                record.status_code,
                record.latency_ms,
                record.error,
                record.response_body,
            ),
        )
    except sqlite3.IntegrityError:
        # The foreign key failed: the webhook and its deliveries were
        # deleted during the attempt.
        return False
    if record.next_attempt_at is not None:
        status = "pending"
    else:
        status = "delivered" if record.delivered else "failed"
    updated = await db.execute(
        "UPDATE webhook_deliveries SET status = ?, attempt_count = ?,"
        " next_attempt_at = ?, last_attempt_at = ?, last_status_code = ?,"
        " last_error = ? WHERE id = ? AND status = 'pending'",
        (
            status,
            record.attempt,
            record.next_attempt_at,
            attempted_at,
            record.status_code,
            record.error,
            record.delivery_id,
        ),
    )
    return updated > 0


async def reset_failures(db: Database, webhook_id: str) -> None:
    await db.execute(
        "UPDATE webhooks SET consecutive_failures = 0"
        " WHERE id = ? AND consecutive_failures != 0",
        (webhook_id,),
    )


async def count_failure(
    db: Database, webhook_id: str, *, disable_after: int
) -> dict[str, Any] | None:
    """Count a failed delivery; disable the webhook at ``disable_after`` in a row.

    ``disable_after`` 0 never disables. Returns the webhook's status and
    count after the change, or None when no active webhook has the id.
    """
    return await db.fetchone(
        "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1,"
        " status = CASE WHEN :limit > 0 AND consecutive_failures + 1 >= :limit"
        " THEN 'disabled' ELSE status END,"
        " disabled_at = CASE WHEN :limit > 0 AND consecutive_failures + 1 >= :limit"
        " THEN :now ELSE disabled_at END,"
        " disabled_reason = CASE WHEN :limit > 0"
        " AND consecutive_failures + 1 >= :limit THEN :reason"
        " ELSE disabled_reason END"
        " WHERE id = :webhook_id AND status = 'active'"
        " RETURNING status, consecutive_failures",
        {
            "limit": disable_after,
            "now": format_timestamp(utc_now()),
            "reason": f"{disable_after} deliveries in a row failed after their"
            " last attempt",
            "webhook_id": webhook_id,
        },
    )


async def disable_webhook(db: Database, webhook_id: str, reason: str) -> bool:
    """Disable an active webhook with ``reason``; return whether it was active."""
    updated = await db.execute(
        "UPDATE webhooks SET status = 'disabled', disabled_reason = ?,"
        " disabled_at = ? WHERE id = ? AND status = 'active'",
        (reason, format_timestamp(utc_now()), webhook_id),
    )
    return updated > 0


async def fail_pending_deliveries(db: Database, webhook_id: str, reason: str) -> int:
    """Mark the webhook's pending deliveries failed with ``reason``; return how many."""
    return await db.execute(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL,"
        " last_error = ? WHERE webhook_id = ? AND status = 'pending'",
        (reason, webhook_id),
    )


async def get_webhook_owner(db: Database, webhook_id: str) -> dict[str, Any] | None:
    """Return the webhook's id, app_id and owning user_id, or None. Unscoped."""
    return await db.fetchone(
        "SELECT webhooks.id, webhooks.app_id, apps.user_id FROM webhooks"
        " JOIN apps ON apps.id = webhooks.app_id WHERE webhooks.id = ?",
        (webhook_id,),
    )


async def prune_deliveries(db: Database, older_than: datetime) -> int:
    """Delete finished deliveries created before ``older_than``; return how many."""
    return await db.execute(
        "DELETE FROM webhook_deliveries WHERE status != 'pending' AND created_at < ?",
        (format_timestamp(older_than),),
    )
