"""Viewer counting: the tracker, the status fields, and real HTTP viewers."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web
from yarl import URL

from realcast_box.hls.viewers import ViewerTracker, viewer_stats
from tests.box import start_box, start_publisher
from tests.hls_helpers import (
    fetch_playlists,
    issue_token,
    playlist_uris,
    signed_stream,
    write_hls_tree,
)

VIEWERS = 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_tracker(**settings) -> tuple[ViewerTracker, FakeClock]:
    clock = FakeClock()
    options = {"window": 15.0, "retain": 60.0, "max_sessions": 1000}
    options.update(settings)
    return ViewerTracker(clock=clock, **options), clock


# --- Tracker ------------------------------------------------------------------


def test_tracker_counts_distinct_sessions():
    tracker, _ = make_tracker()
    for key in ("s:a", "s:b", "v:alice"):
        tracker.touch("stream_1", key, "p1")
    assert tracker.stats("stream_1", "p1").viewer_count == 3


def test_tracker_same_viewer_counts_once():
    tracker, _ = make_tracker()
    tracker.touch("stream_1", "v:alice", "p1")
    tracker.touch("stream_1", "v:alice", "p1")
    stats = tracker.stats("stream_1", "p1")
    assert stats.viewer_count == 1
    assert stats.total_views == 1


def test_tracker_streams_are_separate():
    tracker, _ = make_tracker()
    tracker.touch("stream_1", "s:a", "p1")
    tracker.touch("stream_2", "s:a", "p2")
    tracker.touch("stream_2", "s:b", "p2")
    assert tracker.stats("stream_1", "p1").viewer_count == 1
    assert tracker.stats("stream_2", "p2").viewer_count == 2


def test_tracker_window_expiry_keeps_peak():
    tracker, clock = make_tracker()
    tracker.touch("stream_1", "s:a", "p1")
    tracker.touch("stream_1", "s:b", "p1")
    clock.now += 10
    tracker.touch("stream_1", "s:b", "p1")
    clock.now += 10
    stats = tracker.stats("stream_1", "p1")
    assert stats.viewer_count == 1
    assert stats.peak_viewers == 2
    clock.now += 10
    assert tracker.stats("stream_1", "p1").viewer_count == 0


def test_tracker_returning_session_views():
    tracker, clock = make_tracker(window=15.0, retain=60.0)
    tracker.touch("stream_1", "s:a", "p1")
    clock.now += 30
    tracker.touch("stream_1", "s:a", "p1")
    assert tracker.stats("stream_1", "p1").total_views == 1
    clock.now += 61
    tracker.touch("stream_1", "s:a", "p1")
    assert tracker.stats("stream_1", "p1").total_views == 2


def test_tracker_peak_counts_concurrent_viewers_only():
    tracker, clock = make_tracker(window=15.0)
    tracker.touch("stream_1", "s:a", "p1")
    clock.now += 20
    tracker.touch("stream_1", "s:b", "p1")
    stats = tracker.stats("stream_1", "p1")
    assert stats.peak_viewers == 1
    assert stats.total_views == 2


def test_tracker_new_publishing_session_resets():
    tracker, _ = make_tracker()
    tracker.touch("stream_1", "s:a", "p1")
    assert tracker.stats("stream_1", None).viewer_count == 1
    stats = tracker.stats("stream_1", "p2")
    assert stats.viewer_count == 0
    assert stats.peak_viewers == 0
    assert stats.total_views == 0
    assert tracker.session_count == 0


def test_tracker_offline_touch_keeps_session_stats():
    tracker, _ = make_tracker()
    tracker.touch("stream_1", "s:a", "p1")
    tracker.touch("stream_1", "s:b", None)
    assert tracker.stats("stream_1", None).total_views == 2


def test_tracker_cap_drops_least_recently_active():
    tracker, clock = make_tracker(max_sessions=3)
    for key in ("s:a", "s:b", "s:c"):
        tracker.touch("stream_1", key, "p1")
        clock.now += 1
    tracker.touch("stream_2", "s:d", "p2")
    assert tracker.session_count == 3
    assert not tracker.seen_within("stream_1", "s:a", 100)
    assert tracker.seen_within("stream_1", "s:b", 100)
    assert tracker.seen_within("stream_2", "s:d", 100)


def test_tracker_forgets_after_retain():
    tracker, clock = make_tracker(window=5.0, retain=20.0)
    tracker.touch("stream_1", "s:a", "p1")
    clock.now += 21
    tracker.touch("stream_1", "s:b", "p1")
    assert tracker.session_count == 1


def test_tracker_seen_within():
    tracker, clock = make_tracker()
    tracker.touch("stream_1", "v:alice", "p1")
    clock.now += 10
    assert tracker.seen_within("stream_1", "v:alice", 15)
    assert not tracker.seen_within("stream_1", "v:alice", 5)
    assert not tracker.seen_within("stream_1", "v:bob", 15)


def test_viewer_stats_without_tracker():
    assert viewer_stats(web.Application(), "stream_1") == {
        "viewer_count": 0,
        "peak_viewers": 0,
        "total_views": 0,
    }


# --- Counting over HTTP -------------------------------------------------------


async def test_viewers_multivariant_alone_is_no_viewer(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    write_hls_tree(box, stream["id"])
    response = await box.client.get(f"/hls/{stream['id']}/index.m3u8")
    status = await box.status(stream["id"])
    assert response.status == 200
    assert status["viewer_count"] == 0
    assert status["total_views"] == 0


async def test_viewers_status_fields(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    write_hls_tree(box, stream["id"])
    await fetch_playlists(box, stream["id"], "")
    await fetch_playlists(box, stream["id"], "")
    status = await box.status(stream["id"])
    assert status["viewer_count"] == 2
    assert status["peak_viewers"] == 2
    assert status["total_views"] == 2


async def test_viewers_head_is_no_viewer(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    write_hls_tree(box, stream["id"])
    response = await box.client.head(f"/hls/{stream['id']}/source/index.m3u8")
    assert response.status == 200
    assert (await box.status(stream["id"]))["viewer_count"] == 0


async def test_viewers_one_viewer_id_counts_once(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream(box)
    for viewer_id in ("alice", "alice", "bob"):
        token = (await issue_token(box, stream["id"], viewer_id))["playback_token"]
        await fetch_playlists(box, stream["id"], f"token={token}")
    status = await box.status(stream["id"])
    assert status["viewer_count"] == 2
    assert status["total_views"] == 2


async def test_viewers_direct_media_playlist_reloads_count_once(
    aiohttp_client, tmp_path
):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    write_hls_tree(box, stream["id"])
    for _ in range(3):
        response = await box.client.get(f"/hls/{stream['id']}/source/index.m3u8")
        assert response.status == 200
    assert (await box.status(stream["id"]))["viewer_count"] == 1


# --- End to end: a real publisher and real HTTP viewers -----------------------


async def watch(url: str, stop: asyncio.Event) -> int:
    """Play ``url`` like a player until ``stop``: reload, fetch new segments.

    Returns the number of segments fetched.
    """
    fetched: set[str] = set()
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200
            media_url = response.url.join(URL(playlist_uris(await response.text())[0]))
        while not stop.is_set():
            async with session.get(media_url) as response:
                assert response.status == 200
                playlist = await response.text()
            for uri in playlist_uris(playlist):
                name = uri.split("?")[0]
                if name in fetched:
                    continue
                async with session.get(media_url.join(URL(uri))) as r:
                    assert r.status == 200
                    await r.read()
                fetched.add(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    return len(fetched)


async def wait_for_viewers(box, stream_id: str, count: int, timeout=20.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await box.status(stream_id)
        if status["viewer_count"] == count or loop.time() > deadline:
            return status
        await asyncio.sleep(0.2)


async def test_viewers_real_clients_counted(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, hls_viewer_window=3.0)
    stream = await box.create_stream()
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "20", "--realtime"
    )
    stop = asyncio.Event()
    viewers: list[asyncio.Task] = []
    try:
        await box.wait_for_status(stream["id"], "live")
        url = str(box.client.make_url(f"/hls/{stream['id']}/index.m3u8"))
        await wait_for_ready(box, f"/hls/{stream['id']}/index.m3u8")
        viewers = [asyncio.create_task(watch(url, stop)) for _ in range(VIEWERS)]

        playing = await wait_for_viewers(box, stream["id"], VIEWERS)
        stop.set()
        segments = await asyncio.gather(*viewers)
        stopped = await wait_for_viewers(box, stream["id"], 0, timeout=10.0)
    finally:
        stop.set()
        for task in viewers:
            task.cancel()
        publisher.kill()
        await publisher.wait()

    assert playing["viewer_count"] == VIEWERS
    assert min(segments) > 0
    assert stopped["viewer_count"] == 0
    assert stopped["peak_viewers"] == VIEWERS
    assert stopped["total_views"] == VIEWERS


async def wait_for_ready(box, path: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await box.client.get(path)).status != 200:
        assert loop.time() < deadline, f"{path} never became available"
        await asyncio.sleep(0.1)
