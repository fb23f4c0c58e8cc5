"""The reconnect window: a dropped publisher's session waits for it to come back.

Hub tests drive the real hub, database and segmenter without RTMP. The
end-to-end tests run a real box with PyAV publishers in child processes,
drop one by killing it, and read the HLS output over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from pathlib import Path

import pytest

from realcast_box.app import create_app
from realcast_box.config import load_config
from realcast_box.hls.playlist import clock_media_sequence
from realcast_box.live.hub import Hub, PublishRejected
from realcast_box.store import apps as app_store
from realcast_box.store import streams as stream_store
from realcast_box.store import users as user_store
from realcast_box.store.db import Database
from realcast_box.store.ids import utc_now
from realcast_box.store.migrations import MIGRATIONS
from tests.box import (
    Box,
    decode_file,
    download_hls,
    start_box,
    start_publisher,
)

# Hub tests.


async def make_stream_row(database: Database) -> dict:
    user = await user_store.create_user(database, "hub@example.com", "Hub", "hash")
    app = await app_store.create_app(database, user["id"], "App", "", {})
    return await stream_store.create_stream(database, app["id"], "Stream", "", {})


def make_reconnecting_hub(
    database: Database, tmp_path: Path, *, window: float = 60.0, takeover: float = 5
) -> Hub:
    return Hub(
        database,
        tmp_path / "hls",
        segment_duration=2.0,
        window=6,
        takeover_after=takeover,
        reconnect_window=window,
    )


class Disconnects(list):
    """A disconnect callback that records the reasons it was called with."""

    async def __call__(self, reason: str) -> None:
        self.append(reason)


async def wait_until(condition, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition still false after {timeout} s")


async def row_status(database: Database, stream_id: str) -> str:
    row = await stream_store.get_stream(database, stream_id)
    assert row is not None
    return row["status"]


async def test_hub_drop_enters_reconnecting(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path)
    stream = await make_stream_row(database)
    publisher = await hub.start(stream, "127.0.0.1:1", Disconnects())
    session = hub.session_id(stream["id"])

    await hub.stop(publisher, "client closed the connection")

    assert hub.state(stream["id"]) == "reconnecting"
    assert not hub.is_live(stream["id"])
    assert hub.session_id(stream["id"]) == session
    assert await row_status(database, stream["id"]) == "reconnecting"
    await hub.close()


async def test_hub_reconnect_continues_session(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path)
    stream = await make_stream_row(database)
    first = await hub.start(stream, "127.0.0.1:1", Disconnects())
    started_at = (await stream_store.get_stream(database, stream["id"]))["started_at"]
    await hub.stop(first, "client closed the connection")

    second = await hub.start(stream, "127.0.0.1:2", Disconnects())
    row = await stream_store.get_stream(database, stream["id"])

    assert second.publication is first.publication
    assert second.active
    assert not first.active
    assert hub.state(stream["id"]) == "live"
    assert hub.is_live(stream["id"])
    assert row["status"] == "live"
    assert row["started_at"] == started_at
    await hub.close()


async def test_hub_window_expiry_ends_session(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path, window=0.2)
    stream = await make_stream_row(database)
    publisher = await hub.start(stream, "127.0.0.1:1", Disconnects())
    await hub.stop(publisher, "client closed the connection")

    await wait_until(lambda: hub.state(stream["id"]) is None)

    assert hub.session_id(stream["id"]) is None
    assert publisher.publication.finished
    assert await row_status(database, stream["id"]) == "offline"
    await hub.close()


async def test_hub_unpublish_ends_at_once(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path)
    stream = await make_stream_row(database)
    publisher = await hub.start(stream, "127.0.0.1:1", Disconnects())

    await hub.stop(publisher, "publisher sent deleteStream", reconnect=False)

    assert hub.state(stream["id"]) is None
    assert await row_status(database, stream["id"]) == "offline"
    await hub.close()


async def test_hub_zero_window_ends_at_once(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path, window=0)
    stream = await make_stream_row(database)
    publisher = await hub.start(stream, "127.0.0.1:1", Disconnects())

    await hub.stop(publisher, "client closed the connection")

    assert hub.state(stream["id"]) is None
    await hub.close()


async def test_hub_close_ends_reconnecting_session(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path)
    stream = await make_stream_row(database)
    publisher = await hub.start(stream, "127.0.0.1:1", Disconnects())
    await hub.stop(publisher, "client closed the connection")

    await hub.close()

    assert hub.state(stream["id"]) is None
    assert publisher.publication.finished
    assert await row_status(database, stream["id"]) == "offline"
    with pytest.raises(PublishRejected):
        await hub.start(stream, "127.0.0.1:2", Disconnects())


async def test_hub_kick_ends_reconnecting_session(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path)
    stream = await make_stream_row(database)
    disconnects = Disconnects()
    publisher = await hub.start(stream, "127.0.0.1:1", disconnects)
    await hub.stop(publisher, "client closed the connection")

    await hub.kick(stream["id"], "stream key reset")

    assert hub.state(stream["id"]) is None
    assert disconnects == []
    assert await row_status(database, stream["id"]) == "offline"
    await hub.close()


async def test_hub_remove_output_ends_reconnecting_session(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path)
    stream = await make_stream_row(database)
    publisher = await hub.start(stream, "127.0.0.1:1", Disconnects())
    await hub.stop(publisher, "client closed the connection")

    await hub.remove_output(stream["id"])

    assert hub.state(stream["id"]) is None
    assert not (tmp_path / "hls" / stream["id"]).exists()
    await hub.close()


async def test_hub_takeover_continues_session(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path, takeover=0)
    stream = await make_stream_row(database)
    stalled_disconnects = Disconnects()
    stalled = await hub.start(stream, "127.0.0.1:1", stalled_disconnects)

    fresh = await hub.start(stream, "127.0.0.1:2", Disconnects())
    # The stalled connection closes later; its stop must not touch the session.
    await hub.stop(stalled, "connection error")

    assert stalled_disconnects == ["taken over by a new publisher"]
    assert fresh.publication is stalled.publication
    assert fresh.active
    assert hub.state(stream["id"]) == "live"
    await hub.close()


async def test_hub_busy_publisher_not_taken_over(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path, takeover=60)
    stream = await make_stream_row(database)
    await hub.start(stream, "127.0.0.1:1", Disconnects())

    with pytest.raises(PublishRejected, match="already being published"):
        await hub.start(stream, "127.0.0.1:2", Disconnects())
    await hub.close()


async def test_hub_media_sequence_starts_from_clock(database, tmp_path):
    hub = make_reconnecting_hub(database, tmp_path)
    stream = await make_stream_row(database)
    before = clock_media_sequence(time.time())

    publisher = await hub.start(stream, "127.0.0.1:1", Disconnects())

    assert publisher.publication.segmenter.next_sequence >= before
    await hub.close()


async def test_hub_negative_window_rejected(database, tmp_path):
    with pytest.raises(ValueError, match="reconnect_window"):
        make_reconnecting_hub(database, tmp_path, window=-1)


def test_clock_media_sequence_is_milliseconds():
    assert clock_media_sequence(1_700_000_000.25) == 1_700_000_000_250


# Store.


async def test_store_reconnecting_counts_as_session(database):
    stream = await make_stream_row(database)
    await stream_store.mark_stream_live(database, stream["id"], utc_now())
    await stream_store.mark_stream_reconnecting(database, stream["id"])
    row = await stream_store.get_stream(database, stream["id"])

    assert row["status"] == "reconnecting"
    assert row["ended_at"] is None
    assert stream_store.current_duration(row) >= 0


async def test_store_restart_ends_reconnecting_stream(database):
    stream = await make_stream_row(database)
    await stream_store.mark_stream_live(database, stream["id"], utc_now())
    await stream_store.mark_stream_reconnecting(database, stream["id"])

    changed = await stream_store.reset_live_streams(database, utc_now())

    assert [row["id"] for row in changed] == [stream["id"]]
    assert await row_status(database, stream["id"]) == "offline"


async def test_store_migration_keeps_stream_status(tmp_path):
    path = tmp_path / "old.db"
    # Every migration before the one that adds the 'reconnecting' status.
    adds = next(n for n, sql in MIGRATIONS if "'reconnecting'" in sql)
    database = await Database.open(path, migrations=MIGRATIONS[: adds - 1])
    stream = await make_stream_row(database)
    await stream_store.mark_stream_live(database, stream["id"], utc_now())
    await database.close()

    database = await Database.open(path)
    try:
        status = await row_status(database, stream["id"])
        await stream_store.mark_stream_reconnecting(database, stream["id"])
        reconnecting = await row_status(database, stream["id"])
        with pytest.raises(Exception, match="CHECK constraint"):
            await database.execute("UPDATE streams SET status = 'bogus'")
    finally:
        await database.close()

    assert status == "live"
    assert reconnecting == "reconnecting"


# End to end.

MEDIA_SEQUENCE = re.compile(r"^#EXT-X-MEDIA-SEQUENCE:(\d+)$", re.M)


async def fetch_media_playlist(box: Box, stream_id: str) -> str | None:
    response = await box.client.get(f"/hls/{stream_id}/index.m3u8")
    if response.status != 200:
        return None
    lines = (await response.text()).splitlines()
    variant = next(line for line in lines if line and not line.startswith("#"))
    response = await box.client.get(f"/hls/{stream_id}/{variant}")
    if response.status != 200:
        return None
    return await response.text()


def segment_count(playlist: str) -> int:
    return sum(1 for line in playlist.splitlines() if line.startswith("#EXTINF:"))


def last_sequence(playlist: str) -> int:
    """Media sequence number of the playlist's last segment."""
    return int(MEDIA_SEQUENCE.search(playlist).group(1)) + segment_count(playlist) - 1


class PlaylistWatcher:
    """Fetches a stream's media playlist and keeps every media sequence seen."""

    def __init__(self, box: Box, stream_id: str) -> None:
        self.box = box
        self.stream_id = stream_id
        self.sequences: list[int] = []

    async def fetch(self) -> str | None:
        playlist = await fetch_media_playlist(self.box, self.stream_id)
        if playlist is not None:
            self.sequences.append(int(MEDIA_SEQUENCE.search(playlist).group(1)))
        return playlist

    async def wait_for(self, condition, timeout: float = 30.0) -> str:
        """Poll until ``condition(playlist)`` holds; return that playlist."""
        playlist = None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            playlist = await self.fetch()
            if playlist is not None and condition(playlist):
                return playlist
            await asyncio.sleep(0.2)
        raise AssertionError(f"playlist never met the condition: {playlist}")


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


async def test_reconnect_publisher_continues_session(aiohttp_client, tmp_path):
    box = await start_box(
        aiohttp_client, tmp_path, reconnect_window_seconds=60, hls_window=10
    )
    stream = await box.create_stream()
    url = box.rtmp_url(stream["stream_key"])
    watcher = PlaylistWatcher(box, stream["id"])

    first = await start_publisher(url, "--seconds", "60", "--realtime")
    try:
        live = await box.wait_for_status(stream["id"], "live")
        session = box.hub.session_id(stream["id"])
        await watcher.wait_for(lambda text: segment_count(text) >= 3)
    finally:
        await stop_process(first)
    reconnecting = await box.wait_for_status(stream["id"], "reconnecting")
    waiting = await watcher.fetch()

    second = await start_publisher(url, "--seconds", "6", "--realtime")
    try:
        resumed = await box.wait_for_status(stream["id"], "live")
        growing = await watcher.wait_for(
            lambda text: (
                last_sequence(text) > last_sequence(waiting)
                and "#EXT-X-DISCONTINUITY\n" in text
            )
        )
        resumed_session = box.hub.session_id(stream["id"])
        output, _ = await asyncio.wait_for(second.communicate(), 60)
    finally:
        await stop_process(second)
    assert second.returncode == 0, output.decode(errors="replace")
    offline = await box.wait_for_status(stream["id"], "offline")
    download = await download_hls(
        box.client, f"/hls/{stream['id']}/index.m3u8", tmp_path / "dl"
    )
    await watcher.fetch()

    assert reconnecting["started_at"] == live["started_at"]
    assert resumed["started_at"] == live["started_at"]
    assert offline["started_at"] == live["started_at"]
    assert resumed_session == session
    assert "#EXT-X-ENDLIST" not in waiting
    assert "#EXT-X-ENDLIST" not in growing
    assert "#EXT-X-ENDLIST" in download.media_playlist
    assert download.media_playlist.count("#EXT-X-DISCONTINUITY\n") == 1
    # The same encoder settings give the same codec config: one init segment.
    assert len(download.joined_files) == 1
    assert watcher.sequences == sorted(watcher.sequences)

    decoded = decode_file(download.joined_files[0])
    for earlier, later in itertools.pairwise(decoded.video_pts):
        assert later > earlier
    for earlier, later in itertools.pairwise(decoded.audio_pts):
        assert later > earlier


async def test_reconnect_window_expires_offline(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=2)
    stream = await box.create_stream()
    watcher = PlaylistWatcher(box, stream["id"])

    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "60", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live")
        await watcher.wait_for(lambda text: segment_count(text) >= 1)
    finally:
        await stop_process(process)
    await box.wait_for_status(stream["id"], "reconnecting")
    waiting = await watcher.fetch()
    await box.wait_for_status(stream["id"], "offline", timeout=20)
    ended = await watcher.fetch()

    assert "#EXT-X-ENDLIST" not in waiting
    assert "#EXT-X-ENDLIST" in ended
    assert box.hub.state(stream["id"]) is None


async def test_reconnect_shutdown_while_reconnecting(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=600)
    stream = await box.create_stream()
    watcher = PlaylistWatcher(box, stream["id"])

    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "60", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live")
        await watcher.wait_for(lambda text: segment_count(text) >= 1)
    finally:
        await stop_process(process)
    await box.wait_for_status(stream["id"], "reconnecting")

    # Stopping the box must not wait for the reconnect window.
    async with asyncio.timeout(15):
        await box.client.close()
    database = await Database.open(box.data_dir / "realcast.db")
    try:
        status = await row_status(database, stream["id"])
    finally:
        await database.close()
    playlists = list((box.data_dir / "hls" / stream["id"]).glob("*/index.m3u8"))

    assert status == "offline"
    assert len(playlists) == 1
    assert "#EXT-X-ENDLIST" in playlists[0].read_text()


async def start_box_again(aiohttp_client, box: Box) -> Box:
    """Start a new box on ``box``'s data directory, as after a restart."""
    settings = {
        "data_dir": str(box.data_dir),
        "host": "127.0.0.1",
        "rtmp_port": 0,
        "rate_limit_per_minute": 100_000,
        "stream_rate_limit_per_minute": 100_000,
    }
    app = create_app(load_config(None, environ={}, overrides=settings))
    client = await aiohttp_client(app)
    response = await client.post(
        "/api/auth/login",
        json={"email": "publisher@example.com", "password": "correct horse battery"},
    )
    assert response.status == 200, await response.text()
    return Box(client, app, box.data_dir, (await response.json())["access_token"])


async def publish_session(box: Box, stream: dict) -> str:
    """Publish a few seconds, wait for the session's end, return its playlist."""
    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "5"
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await stop_process(process)
    assert process.returncode == 0, output.decode(errors="replace")
    await box.wait_for_status(stream["id"], "offline")
    playlist = await fetch_media_playlist(box, stream["id"])
    assert playlist is not None
    return playlist


async def test_reconnect_box_restart_media_sequence_increases(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    seen = await publish_session(box, stream)
    await box.client.close()

    restarted = await start_box_again(aiohttp_client, box)
    after = await publish_session(restarted, stream)
    first_after = int(MEDIA_SEQUENCE.search(after).group(1))

    assert segment_count(seen) >= 2
    assert first_after > last_sequence(seen)


async def test_reset_key_ends_reconnecting_session(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=60)
    stream = await box.create_stream()
    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live")
        process.kill()
        await process.wait()
        await box.wait_for_status(stream["id"], "reconnecting")

        response = await box.client.post(
            f"/api/streams/{stream['id']}/reset-key", headers=box.auth
        )
        assert response.status == 200
        status = await box.wait_for_status(stream["id"], "offline", timeout=5)
        assert status["status"] == "offline"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
