"""The in-process event bus: subscriptions, type filters and failing handlers."""

from __future__ import annotations

import json

import pytest

from realcast_box.events import EVENT_TYPES, Event, EventBus


def make_event(event_type: str = "stream.live", **fields) -> Event:
    return Event(
        event_type, "app_0123456789abcdef", "stream_0123456789abcdef", **fields
    )


async def test_events_handlers_called_in_order():
    bus = EventBus()
    calls: list[tuple[str, str]] = []

    async def first(event: Event) -> None:
        calls.append(("first", event.id))

    async def second(event: Event) -> None:
        calls.append(("second", event.id))

    bus.subscribe(first)
    bus.subscribe(second)
    event = make_event()
    await bus.publish(event)

    assert calls == [("first", event.id), ("second", event.id)]


async def test_events_type_filter():
    bus = EventBus()
    seen: list[str] = []

    async def handler(event: Event) -> None:
        seen.append(event.type)

    bus.subscribe(handler, types=["stream.offline"])
    await bus.publish(make_event("stream.live"))
    await bus.publish(make_event("stream.offline"))

    assert seen == ["stream.offline"]


async def test_events_failing_handler_isolated(caplog):
    bus = EventBus()
    seen: list[str] = []

    async def broken(event: Event) -> None:
        raise RuntimeError("receiver store is gone")

    async def working(event: Event) -> None:
        seen.append(event.id)

    bus.subscribe(broken)
    bus.subscribe(working)
    event = make_event()
    await bus.publish(event)

    assert seen == [event.id]
    assert "receiver store is gone" in caplog.text
    assert event.id in caplog.text


async def test_events_unsubscribe_twice_harmless():
    bus = EventBus()
    seen: list[str] = []

    async def handler(event: Event) -> None:
        seen.append(event.id)

    unsubscribe = bus.subscribe(handler)
    unsubscribe()
    unsubscribe()
    await bus.publish(make_event())

    assert seen == []


def test_events_unknown_type_rejected():
    bus = EventBus()

    async def handler(event: Event) -> None:
        pass

    with pytest.raises(ValueError, match=r"stream\.started"):
        bus.subscribe(handler, types=["stream.live", "stream.started"])
    with pytest.raises(ValueError, match=r"stream\.started"):
        make_event("stream.started")


def test_events_payload_shape():
    event = make_event(data={"title": "Hello"})
    payload = event.payload()

    assert list(payload) == ["id", "type", "app_id", "stream_id", "timestamp", "data"]
    assert payload["id"].startswith("evt_")
    assert len(payload["id"]) == len("evt_") + 16
    assert payload["timestamp"].endswith("Z")
    assert payload["data"] == {"title": "Hello"}
    assert json.loads(json.dumps(payload)) == payload


def test_events_ids_unique():
    ids = {make_event().id for _ in range(100)}
    assert len(ids) == 100


def test_events_types_listed():
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES)) == 9
    assert "webhook.test" in EVENT_TYPES
