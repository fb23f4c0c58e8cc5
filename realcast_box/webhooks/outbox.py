"""The durable outbox: events become pending deliveries in SQLite.

``Outbox.handle`` subscribes to the event bus. It writes one pending
delivery per active webhook of the event's app that lists the event type,
in one statement, and returns only after the write is committed. The hub
awaits it, so an event is stored before the action that caused it is
reported as done. Then it wakes the dispatcher.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from realcast_box.events import WEBHOOK_TEST, Event
from realcast_box.store import webhooks as webhook_store
from realcast_box.store.db import Database

logger = logging.getLogger(__name__)


def encode_body(event: Event) -> str:
    """Return the request body of the event's deliveries: compact, ASCII-only JSON.

    ASCII-only (non-ASCII characters as \\u escapes) means decoding the body
    as text and encoding it again gives the same bytes, whatever encoding a
    receiver assumes, so signature checks on text see the signed bytes.
    """
    return json.dumps(event.payload(), separators=(",", ":"), ensure_ascii=True)


def make_test_event(webhook: dict) -> Event:
    """Return a webhook.test event for ``webhook`` (its row)."""
    return Event(
        WEBHOOK_TEST,
        webhook["app_id"],
        None,
        {
            "webhook_id": webhook["id"],
            "message": "Test event from RealCast Box: the webhook is set up.",
        },
    )


class Outbox:
    """Writes events to the outbox and calls ``on_stored`` when one was stored."""

    def __init__(self, database: Database, on_stored: Callable[[], None]) -> None:
        self._database = database
        self._on_stored = on_stored

    async def handle(self, event: Event) -> None:
        """Store a pending delivery of ``event`` for each subscribed webhook."""
        added = await webhook_store.enqueue_event(
            self._database,
            event_id=event.id,
            event_type=event.type,
            app_id=event.app_id,
            body=encode_body(event),
            due_at=time.time(),
        )
        if added:
            logger.debug(
                "event %s %s of app %s: %d deliveries queued",
                event.type,
                event.id,
                event.app_id,
                added,
            )
            self._on_stored()
