"""In-process event bus: parts of the box publish events, others subscribe.

The hub publishes stream.live and stream.offline, the stream watcher
publishes stream.health.warning and viewer.count.update, and the webhook
outbox subscribes to all of them. ``publish`` awaits every matching handler
in subscription order before it returns, so a handler that stores the event
(the webhook outbox) has committed it by the time the publisher reports its
action as done.

Handlers must return quickly: they run inside the publisher's call, which
may hold the hub's lock. A subscriber with slow work (a WebSocket fan-out)
puts the event on a bounded queue of its own and returns. An exception in a
handler is logged and does not reach the publisher or the other handlers,
so a failing subscriber never fails a publish.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from realcast_box.store.ids import format_timestamp, new_id, utc_now

logger = logging.getLogger(__name__)

STREAM_LIVE = "stream.live"
STREAM_OFFLINE = "stream.offline"
STREAM_HEALTH_WARNING = "stream.health.warning"
VIEWER_COUNT_UPDATE = "viewer.count.update"
CHAT_MESSAGE_NEW = "chat.message.new"
RECORDING_STARTED = "recording.started"
RECORDING_READY = "recording.ready"
RECORDING_FAILED = "recording.failed"
WEBHOOK_TEST = "webhook.test"

# Every event type, in the order the API documents them.
EVENT_TYPES = (
    STREAM_LIVE,
    STREAM_OFFLINE,
    CHAT_MESSAGE_NEW,
    VIEWER_COUNT_UPDATE,
    RECORDING_STARTED,
    RECORDING_READY,
    RECORDING_FAILED,
    STREAM_HEALTH_WARNING,
    WEBHOOK_TEST,
)


@dataclass(frozen=True)
class Event:
    """Something that happened in one app, with a stable id.

    ``id`` ("evt_" and 16 hex digits) stays the same for every delivery of
    the event, so receivers can use it to drop duplicates. ``timestamp`` is
    when the event happened, in the API's ISO 8601 format.
    """

    type: str
    app_id: str
    stream_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: new_id("evt"))
    timestamp: str = field(default_factory=lambda: format_timestamp(utc_now()))

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")

    def payload(self) -> dict[str, Any]:
        """Return the JSON object that webhooks deliver for this event."""
        return {
            "id": self.id,
            "type": self.type,
            "app_id": self.app_id,
            "stream_id": self.stream_id,
            "timestamp": self.timestamp,
            "data": dict(self.data),
        }


Handler = Callable[[Event], Awaitable[None]]
Unsubscribe = Callable[[], None]


@dataclass(frozen=True, eq=False)
class _Subscription:
    handler: Handler
    types: frozenset[str] | None


class EventBus:
    """Delivers each published event to the handlers subscribed to its type."""

    def __init__(self) -> None:
        self._subscriptions: list[_Subscription] = []

    def subscribe(
        self, handler: Handler, *, types: Collection[str] | None = None
    ) -> Unsubscribe:
        """Call ``handler`` for each event of ``types`` (every type when None).

        Returns a function that removes the subscription; calling it twice
        is harmless. Raises ValueError for an unknown event type.
        """
        if types is not None:
            unknown = sorted(set(types) - set(EVENT_TYPES))
            if unknown:
                raise ValueError(f"unknown event types: {', '.join(unknown)}")
        subscription = _Subscription(
            handler, None if types is None else frozenset(types)
        )
        self._subscriptions.append(subscription)

        def unsubscribe() -> None:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

        return unsubscribe

    async def publish(self, event: Event) -> None:
        """Await each matching handler in turn; handler errors are logged."""
        for subscription in list(self._subscriptions):
            if subscription.types is not None and event.type not in subscription.types:
                continue
            try:
                await subscription.handler(event)
            except Exception:
                logger.exception(
                    "event handler %r failed on %s %s (app %s)",
                    subscription.handler,
                    event.type,
                    event.id,
                    event.app_id,
                )
