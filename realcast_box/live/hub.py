"""The publication hub: one Publication per live or reconnecting stream.

The RTMP server calls the hub to start publishing once a stream key checks
out, feeds media through the returned Publisher, and stops it when the
connection goes away. A publisher that drops (rather than unpublishing) leaves
its session waiting for the reconnect window: the playlists stay live, and a
publisher that comes back with the same key continues the same session. The
hub keeps the stream's row in SQLite in step (live, reconnecting, offline,
timestamps) and owns the HLS packager of each session.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from realcast_box.errors import RealcastError
from realcast_box.events import EventBus
from realcast_box.hls.output import RenditionFiles
from realcast_box.hls.playlist import clock_media_sequence
from realcast_box.live.ladder import LiveLadder
from realcast_box.live.publication import Disconnect, Publication, Publisher, State
from realcast_box.live.session_events import live_event, offline_event
from realcast_box.store import profiles as profile_store
from realcast_box.store import streams as stream_store
from realcast_box.store.db import Database

logger = logging.getLogger(__name__)

# A status update of one stream's row: (database, stream_id).
StatusUpdate = Callable[[Database, str], Awaitable[None]]
# Picks the H.264 encoder for a profile from its enable_gpu_acceleration:
# the hardware encoder's name, or None for libx264.
EncoderChoice = Callable[[bool], Awaitable[str | None]]


async def _software_only(enable_gpu_acceleration: bool) -> str | None:
    return None


class PublishRejected(RealcastError):
    """A publish attempt was refused; ``code`` is the NetStream status code."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class Hub:
    """Registry of publishing sessions, keyed by stream id.

    ``reconnect_window`` is how many seconds a session waits for its
    publisher to come back after the connection dropped; 0 ends it at once.
    Each session's start and end go to ``events`` as stream.live and
    stream.offline, published before the hub reports the change.
    """

    def __init__(
        self,
        database: Database,
        hls_root: Path,
        *,
        segment_duration: float,
        window: int,
        takeover_after: float,
        reconnect_window: float = 0.0,
        choose_encoder: EncoderChoice = _software_only,
        events: EventBus | None = None,
        part_duration: float | None = None,
    ) -> None:
        if reconnect_window < 0:
            raise ValueError(
                f"invalid reconnect_window {reconnect_window!r}: expected seconds >= 0"
            )
        self._database = database
        self._hls_root = hls_root
        self._segment_duration = segment_duration
        self._window = window
        # Low-latency HLS part target in seconds; None turns it off.
        self._part_duration = part_duration
        self._takeover_after = takeover_after
        self._reconnect_window = reconnect_window
        self._choose_encoder = choose_encoder
        self._events = events or EventBus()
        self._publications: dict[str, Publication] = {}
        # Ladders of ended sessions that are still writing their last
        # segments, and the task that finishes each.
        self._finishing: dict[str, tuple[LiveLadder, asyncio.Task]] = {}
        self._expiry_tasks: dict[str, asyncio.Task] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def hls_root(self) -> Path:
        return self._hls_root

    @property
    def segment_duration(self) -> float:
        return self._segment_duration

    def live_rendition(self, stream_id: str, rendition: str) -> RenditionFiles | None:
        """Return the files of a rendition that the stream's session is writing.

        None for a rendition of an ended session, or of no session.
        """
        publication = self._publications.get(stream_id)
        if publication is None:
            return None
        return publication.segmenter.files.multivariant.rendition(rendition)

    def is_live(self, stream_id: str) -> bool:
        """Return whether a publisher is connected to ``stream_id`` now."""
        return self.state(stream_id) == "live"

    def state(self, stream_id: str) -> State | None:
        """Return "live" or "reconnecting" for a stream in a session, else None.

        Ended sessions leave the hub, so "ended" is never returned.
        """
        publication = self._publications.get(stream_id)
        return publication.state if publication is not None else None

    def session_id(self, stream_id: str) -> str | None:
        """Return the id of the stream's session, the same across reconnects."""
        publication = self._publications.get(stream_id)
        return publication.session_id if publication is not None else None

    def publication(self, stream_id: str) -> Publication | None:
        """Return the stream's session while it is live or reconnecting."""
        return self._publications.get(stream_id)

    def publications(self) -> list[Publication]:
        return list(self._publications.values())

    async def start(
        self, stream: dict, client_address: str, disconnect: Disconnect
    ) -> Publisher:
        """Start publishing ``stream`` (its database row) from a new connection.

        A stream in its reconnect window continues its session. Raises
        PublishRejected when another publisher is live on the stream and has
        sent media within the takeover window. A live publisher that has been
        silent longer (a dead connection OBS is reconnecting around) is
        disconnected, and the new one continues its session.
        """
        stream_id = stream["id"]
        async with self._lock:
            if self._closed:
                raise PublishRejected(
                    "NetStream.Publish.Rejected", "server is shutting down"
                )
            current = self._publications.get(stream_id)
            if current is None:
                return await self._start_session(stream, client_address, disconnect)

            replaced = self._take_over(current, client_address)
            self._cancel_expiry(stream_id)
            publisher = current.attach(client_address, disconnect)
            await self._mark(stream_store.mark_stream_resumed, stream_id, "live")
            logger.info(
                "stream %s: publisher %s resumed the session (connection %d)",
                stream_id,
                client_address,
                current.publisher_count,
            )
            if replaced is not None:
                await replaced.disconnect("taken over by a new publisher")
        return publisher

    async def stop(
        self, publisher: Publisher, reason: str, *, reconnect: bool = True
    ) -> None:
        """Handle the end of ``publisher``'s connection; safe to call twice.

        With ``reconnect`` and a reconnect window, the session waits for the
        publisher to come back; otherwise it ends now.
        """
        async with self._lock:
            publication = publisher.publication
            if publication.publisher is not publisher or publication.finished:
                return
            if not reconnect or self._reconnect_window <= 0 or self._closed:
                await self._end(publication, reason, disconnect=False)
                return
            publication.detach()
            stream_id = publication.stream_id
            await self._mark(
                stream_store.mark_stream_reconnecting, stream_id, "reconnecting"
            )
            self._expiry_tasks[stream_id] = asyncio.create_task(
                self._expire(publication), name=f"reconnect window {stream_id}"
            )
        logger.info(
            "stream %s: reconnecting: publisher %s left (%s); the session waits "
            "%g s for it to come back",
            stream_id,
            publisher.client_address,
            reason,
            self._reconnect_window,
        )

    async def kick(self, stream_id: str, reason: str) -> None:
        """End the session of ``stream_id``, disconnecting its publisher if any."""
        async with self._lock:
            publication = self._publications.get(stream_id)
            if publication is not None:
                await self._end(publication, reason)

    async def remove_output(self, stream_id: str) -> None:
        """Delete the HLS files of a stream after its deletion.

        A session in its reconnect window ends first. A live session keeps
        its files (the caller kicks it first).
        """
        async with self._lock:
            publication = self._publications.get(stream_id)
            if publication is not None:
                if publication.state == "live":
                    return
                await self._end(publication, "stream deleted while reconnecting")
            await self._wait_for_ladder(stream_id, abort=True)
            directory = self._hls_root / stream_id
            if directory.exists():
                await asyncio.to_thread(shutil.rmtree, directory)

    async def close(self) -> None:
        """End every session; later publish attempts are rejected."""
        async with self._lock:
            self._closed = True
            for publication in list(self._publications.values()):
                await self._end(publication, "server shutting down")
            for stream_id in list(self._finishing):
                await self._wait_for_ladder(stream_id)

    async def _start_session(
        self, stream: dict, client_address: str, disconnect: Disconnect
    ) -> Publisher:
        stream_id = stream["id"]
        directory = self._hls_root / stream_id
        # The new session replaces the files, so the old ladder need not
        # encode its backlog, and other streams do not wait under the lock.
        await self._wait_for_ladder(stream_id, abort=True)
        await asyncio.to_thread(shutil.rmtree, directory, True)
        started_at = datetime.now(UTC).replace(microsecond=0)
        publication = Publication(
            stream_id=stream_id,
            app_id=stream["app_id"],
            started_at=started_at,
            hls_directory=directory,
            segment_duration=self._segment_duration,
            window=self._window,
            first_sequence=clock_media_sequence(time.time()),
            part_duration=self._part_duration,
        )
        await self._start_ladder(publication, stream)
        publisher = publication.attach(client_address, disconnect)
        self._publications[stream_id] = publication
        await stream_store.mark_stream_live(self._database, stream_id, started_at)
        logger.info(
            "stream %s: publishing from %s, session %s",
            stream_id,
            client_address,
            publication.session_id,
        )
        await self._events.publish(live_event(stream, publication, client_address))
        return publisher

    async def _start_ladder(self, publication: Publication, stream: dict) -> None:
        """Give the session a transcoding ladder when the stream has a profile.

        A profile that cannot be loaded leaves the stream passthrough only,
        with the reason logged: a publish never fails for want of a ladder.
        """
        settings = stream.get("settings")
        profile_id = (
            settings.get("transcoding_profile_id")
            if isinstance(settings, dict)
            else None
        )
        if not profile_id:
            return
        stream_id = stream["id"]
        try:
            profile = await profile_store.get_app_profile(
                self._database, profile_id, stream["app_id"]
            )
            if profile is None:
                logger.warning(
                    "stream %s: transcoding profile %s not found; passthrough only",
                    stream_id,
                    profile_id,
                )
                return
            encoder = await self._choose_encoder(profile["enable_gpu_acceleration"])
            publication.ladder = LiveLadder(
                stream_id=stream_id,
                session_id=publication.session_id,
                source=publication.segmenter,
                profile=profile,
                hardware_encoder=encoder,
                segment_duration=self._segment_duration,
                window=self._window,
                part_duration=self._part_duration,
            )
        except Exception:
            logger.exception(
                "stream %s: failed to start the transcoding ladder; passthrough only",
                stream_id,
            )

    async def _wait_for_ladder(self, stream_id: str, *, abort: bool = False) -> None:
        """Wait for the ended session's ladder; ``abort`` drops its backlog."""
        finishing = self._finishing.pop(stream_id, None)
        if finishing is None:
            return
        ladder, task = finishing
        if abort:
            ladder.abort()
        await asyncio.wait({task})

    def _finish_ladder(self, publication: Publication) -> None:
        """Let the ladder write its last segments in the background."""
        ladder = publication.ladder
        if ladder is None:
            return
        stream_id = publication.stream_id
        task = asyncio.create_task(
            self._run_finish(ladder), name=f"ladder finish {stream_id}"
        )
        self._finishing[stream_id] = (ladder, task)

    @staticmethod
    async def _run_finish(ladder: LiveLadder) -> None:
        try:
            await ladder.finish()
        except Exception:
            logger.exception("transcoding ladder failed to finish")

    def _take_over(self, current: Publication, client_address: str) -> Publisher | None:
        """Detach a silent live publisher, or raise PublishRejected if it is not."""
        if current.publisher is None:
            return None
        idle = time.monotonic() - current.last_media_monotonic
        if idle < self._takeover_after:
            raise PublishRejected(
                "NetStream.Publish.BadName",
                f"stream {current.stream_id} is already being published",
            )
        logger.info(
            "stream %s: publisher %s silent for %.1f s, taken over by %s",
            current.stream_id,
            current.client_address,
            idle,
            client_address,
        )
        return current.detach()

    async def _expire(self, publication: Publication) -> None:
        await asyncio.sleep(self._reconnect_window)
        async with self._lock:
            stream_id = publication.stream_id
            if self._expiry_tasks.get(stream_id) is asyncio.current_task():
                del self._expiry_tasks[stream_id]
            if publication.state != "reconnecting":
                return
            reason = (
                f"reconnect window expired: no publisher came back within "
                f"{self._reconnect_window:g} s"
            )
            await self._end(publication, reason)

    def _cancel_expiry(self, stream_id: str) -> None:
        task = self._expiry_tasks.pop(stream_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _mark(self, update: StatusUpdate, stream_id: str, status: str) -> None:
        """Run a status update of the stream's row; failures are logged."""
        try:
            await update(self._database, stream_id)
        except Exception:
            logger.exception(
                "stream %s: failed to mark the stream %s", stream_id, status
            )

    async def _end(
        self, publication: Publication, reason: str, *, disconnect: bool = True
    ) -> None:
        stream_id = publication.stream_id
        if self._publications.get(stream_id) is not publication:
            return
        del self._publications[stream_id]
        self._cancel_expiry(stream_id)
        publisher = publication.publisher
        # A session that ends in its reconnect window ended when the
        # publisher left.
        ended_at = publication.detached_at or datetime.now(UTC).replace(microsecond=0)
        publication.finish()
        self._finish_ladder(publication)
        try:
            await stream_store.mark_stream_offline(self._database, stream_id, ended_at)
        except Exception:
            logger.exception("stream %s: failed to mark the stream offline", stream_id)
        await self._events.publish(offline_event(publication, ended_at, reason))
        logger.info(
            "stream %s: unpublished after %.1f s (%s)",
            stream_id,
            publication.duration_seconds,
            reason,
        )
        if disconnect and publisher is not None:
            await publisher.disconnect(reason)
