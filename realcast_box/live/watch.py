"""Events sampled from live sessions: stream.health.warning and viewer.count.update.

Ingest warnings and viewer counts are computed on demand (the stream status
endpoint computes them per request), so nothing pushes them when they
change. The StreamWatcher samples every session in the hub once a second
and publishes:

- stream.health.warning when a warning code appears in the connected
  publisher's feed. A code that stays active is sent once, and a code that
  clears and comes back within REPEAT_WARNING_AFTER seconds is not sent
  again, so a flapping measurement cannot flood receivers.
- viewer.count.update when the viewer count differs from the last count
  sent for the session, at most once per ``viewer_count_interval`` seconds
  per stream. Each session starts from a count of 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from realcast_box.events import (
    STREAM_HEALTH_WARNING,
    VIEWER_COUNT_UPDATE,
    Event,
    EventBus,
)
from realcast_box.hls.viewers import ViewerTracker
from realcast_box.live.health import bitrate_limit, ingest_warnings
from realcast_box.live.hub import Hub
from realcast_box.live.publication import Publication
from realcast_box.store import streams as stream_store
from realcast_box.store.db import Database

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
VIEWER_COUNT_INTERVAL = 10.0
REPEAT_WARNING_AFTER = 60.0
# The stream's max_bitrate_kbps setting is read again after this many seconds.
SETTINGS_REFRESH_SECONDS = 30.0


class ViewerCountThrottle:
    """Decides when a stream's viewer count is worth an event.

    A count goes out when it differs from the last count sent for the same
    key, and no sooner than ``interval`` seconds after that send. The first
    count of a key is compared with 0 and may go out at once.
    """

    def __init__(
        self, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        # Key -> (last count sent, clock time of that send).
        self._sent: dict[str, tuple[int, float | None]] = {}

    def should_send(self, key: str, count: int) -> bool:
        """Return whether to send ``count`` now; a True result counts as sent."""
        last_count, last_time = self._sent.get(key, (0, None))
        if count == last_count:
            return False
        now = self._clock()
        if last_time is not None and now - last_time < self.interval:
            return False
        self._sent[key] = (count, now)
        return True

    def keep_only(self, keys: set[str]) -> None:
        """Forget the keys not in ``keys`` (sessions that ended)."""
        for key in set(self._sent) - keys:
            del self._sent[key]


@dataclass
class _HealthState:
    """Warnings seen in one session, reset for each new publisher."""

    publisher_count: int
    active: set[str] = field(default_factory=set)
    # Warning code -> clock time it was last sent, kept across publishers.
    sent_at: dict[str, float] = field(default_factory=dict)
    max_bitrate_kbps: float | None = None
    settings_read_at: float | None = None


class StreamWatcher:
    """Samples the hub's sessions and publishes health and viewer events."""

    def __init__(
        self,
        hub: Hub,
        database: Database,
        events: EventBus,
        *,
        segment_duration: float,
        viewers: ViewerTracker | None,
        check_interval: float = CHECK_INTERVAL,
        viewer_count_interval: float = VIEWER_COUNT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hub = hub
        self._database = database
        self._events = events
        self._segment_duration = segment_duration
        self._viewers = viewers
        self._check_interval = check_interval
        self._clock = clock
        self._throttle = ViewerCountThrottle(viewer_count_interval, clock)
        # Session id -> warning state of that session.
        self._health: dict[str, _HealthState] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stream-watcher")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> None:
        """Sample every session once and publish what changed."""
        publications = self._hub.publications()
        sessions = {publication.session_id for publication in publications}
        for session_id in set(self._health) - sessions:
            del self._health[session_id]
        self._throttle.keep_only(sessions)
        for publication in publications:
            await self._check_health(publication)
            await self._check_viewers(publication)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval)
            try:
                await self.check()
            except Exception:
                logger.exception(
                    "stream watcher failed; trying again in %g s", self._check_interval
                )

    async def _check_health(self, publication: Publication) -> None:
        report = publication.ingest_report()
        if report is None:
            return
        state = self._health.get(publication.session_id)
        if state is None:
            state = _HealthState(publication.publisher_count)
            self._health[publication.session_id] = state
        elif state.publisher_count != publication.publisher_count:
            state.publisher_count = publication.publisher_count
            state.active = set()
        await self._refresh_bitrate_limit(publication.stream_id, state)

        warnings = ingest_warnings(
            report,
            segment_duration=self._segment_duration,
            max_bitrate_kbps=state.max_bitrate_kbps,
        )
        now = self._clock()
        codes = {warning.code for warning in warnings}
        for warning in warnings:
            if warning.code in state.active:
                continue
            sent_at = state.sent_at.get(warning.code)
            if sent_at is not None and now - sent_at < REPEAT_WARNING_AFTER:
                continue
            state.sent_at[warning.code] = now
            logger.info(
                "stream %s: ingest warning %s", publication.stream_id, warning.code
            )
            await self._events.publish(
                Event(
                    STREAM_HEALTH_WARNING,
                    publication.app_id,
                    publication.stream_id,
                    {
                        "session_id": publication.session_id,
                        "code": warning.code,
                        "message": warning.message,
                        "ingest": dataclasses.asdict(report),
                    },
                )
            )
        state.active = codes

    async def _refresh_bitrate_limit(self, stream_id: str, state: _HealthState) -> None:
        now = self._clock()
        read_at = state.settings_read_at
        if read_at is not None and now - read_at < SETTINGS_REFRESH_SECONDS:
            return
        state.settings_read_at = now
        settings = await stream_store.get_stream_settings(self._database, stream_id)
        if settings is not None:
            state.max_bitrate_kbps = bitrate_limit(*settings)

    async def _check_viewers(self, publication: Publication) -> None:
        if self._viewers is None:
            return
        stats = self._viewers.stats(publication.stream_id, publication.session_id)
        if not self._throttle.should_send(publication.session_id, stats.viewer_count):
            return
        await self._events.publish(
            Event(
                VIEWER_COUNT_UPDATE,
                publication.app_id,
                publication.stream_id,
                {"session_id": publication.session_id, **stats.as_json()},
            )
        )
