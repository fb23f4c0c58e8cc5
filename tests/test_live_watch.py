"""The stream watcher: health warning and viewer count events from live sessions.

A real hub holds a real session without an RTMP connection. The tests feed
the session's ingest meter directly and count viewers in a real tracker.
The watcher and the tracker share a fake clock.
"""

from __future__ import annotations

import pytest

from realcast_box.events import Event, EventBus
from realcast_box.hls.viewers import ViewerTracker
from realcast_box.live.watch import REPEAT_WARNING_AFTER, StreamWatcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(publication, start_ms: int, end_ms: int, *, audio: bool) -> None:
    """Feed 25 fps keyframe-only video, and audio frames beside it if ``audio``.

    Video without audio makes the audio count as missing after 3 s.
    """
    health = publication.health
    for timestamp in range(start_ms, end_ms, 40):
        health.add_video(timestamp, 2000, keyframe=True, composition_time=0)
        if audio:
            health.add_audio(timestamp, 300)


@pytest.fixture
async def live_stream(make_user, start_publishing, hub):
    user = await make_user()
    app = await user.create_app()
    stream = await user.create_stream(app["id"])
    await start_publishing(stream["id"])
    return hub.publication(stream["id"])


@pytest.fixture
def watched(hub, database):
    clock = FakeClock()
    bus = EventBus()
    received: list[Event] = []

    async def collect(event: Event) -> None:
        received.append(event)

    bus.subscribe(collect)
    viewers = ViewerTracker(window=15, retain=60, max_sessions=100, clock=clock)
    watcher = StreamWatcher(
        hub, database, bus, segment_duration=2.0, viewers=viewers, clock=clock
    )
    return watcher, clock, viewers, received


async def test_watch_warning_sent_once(live_stream, watched):
    watcher, clock, _, received = watched
    feed(live_stream, 0, 4000, audio=False)

    await watcher.check()
    clock.now += 1
    feed(live_stream, 4000, 5000, audio=False)
    await watcher.check()

    warnings = [event for event in received if event.type == "stream.health.warning"]
    assert len(warnings) == 1
    assert warnings[0].data["code"] == "no_audio"
    assert warnings[0].stream_id == live_stream.stream_id
    assert warnings[0].app_id == live_stream.app_id
    assert warnings[0].data["session_id"] == live_stream.session_id
    assert warnings[0].data["ingest"]["audio_missing"] is True


async def test_watch_no_warning_before_media(live_stream, watched):
    watcher, _, _, received = watched
    await watcher.check()
    assert [event.type for event in received] == []


async def test_watch_warning_again_after_clearing(live_stream, watched):
    watcher, clock, _, received = watched
    steps = [
        (0, 4000, False),  # audio missing: sent
        (4000, 5000, True),  # cleared
        (5000, 9000, False),  # missing again within a minute: held back
        (9000, 10000, True),  # cleared
        (10000, 14000, False),  # missing again a minute after the send: sent
    ]
    sent_counts = []
    for start_ms, end_ms, audio in steps:
        if start_ms == 10000:
            clock.now += REPEAT_WARNING_AFTER
        feed(live_stream, start_ms, end_ms, audio=audio)
        await watcher.check()
        clock.now += 5
        sent_counts.append(len(received))

    assert sent_counts == [1, 1, 1, 1, 2]
    assert [event.data["code"] for event in received] == ["no_audio", "no_audio"]


async def test_watch_viewer_count_throttled(live_stream, watched):
    watcher, clock, viewers, received = watched
    stream_id, session = live_stream.stream_id, live_stream.session_id

    viewers.touch(stream_id, "viewer-1", session)
    await watcher.check()
    viewers.touch(stream_id, "viewer-2", session)
    clock.now += 5
    await watcher.check()
    clock.now += 5
    await watcher.check()
    clock.now += 1
    await watcher.check()

    counts = [event.data["viewer_count"] for event in received]
    assert counts == [1, 2]
    assert received[0].type == "viewer.count.update"
    assert received[0].data["session_id"] == session
    assert received[1].data["total_views"] == 2


async def test_watch_forgets_ended_sessions(live_stream, watched, hub):
    watcher, _, viewers, received = watched
    viewers.touch(live_stream.stream_id, "viewer-1", live_stream.session_id)
    await watcher.check()
    await hub.kick(live_stream.stream_id, "test ends the session")
    await watcher.check()

    assert [event.data["viewer_count"] for event in received] == [1]
    assert hub.publications() == []
