"""Viewer counting: playback sessions that fetched media recently.

A viewer is a playback session: the viewer_id of a playback token (so two
sessions with one viewer_id count once), else the session id the box wrote
into the playlist URIs. A session counts while it has fetched a media
playlist or a segment within the last ``window`` seconds. Fetching only the
multivariant playlist does not make a viewer.

Per stream the tracker keeps ``peak_viewers`` and ``total_views`` for the
current publishing session and resets them when a new one starts.
``total_views`` counts sessions that started: a session that was forgotten
(idle for longer than ``retain`` seconds) and comes back counts again.

Memory is bounded: sessions are forgotten ``retain`` seconds after their last
fetch, and beyond ``max_sessions`` the least recently active session of all
streams is dropped.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from realcast_box.appkeys import HUB
from realcast_box.live.hub import Hub

logger = logging.getLogger(__name__)

# Streams with viewer statistics kept at once. Beyond it the stream whose
# last fetch is oldest loses its statistics.
MAX_TRACKED_STREAMS = 10_000


@dataclass
class StreamViewers:
    """Sessions and statistics of one stream in one publishing session."""

    publishing_session: str | None
    # Viewer key -> time of its last media fetch, least recent first.
    sessions: OrderedDict[str, float] = field(default_factory=OrderedDict)
    peak_viewers: int = 0
    total_views: int = 0
    last_activity: float = 0.0


@dataclass(frozen=True)
class ViewerStats:
    viewer_count: int
    peak_viewers: int
    total_views: int

    def as_json(self) -> dict[str, int]:
        return {
            "viewer_count": self.viewer_count,
            "peak_viewers": self.peak_viewers,
            "total_views": self.total_views,
        }


NO_VIEWERS = ViewerStats(0, 0, 0)


class ViewerTracker:
    """Playback sessions per stream, counted over a sliding window.

    ``clock`` returns seconds (time.monotonic by default).
    """

    def __init__(
        self,
        *,
        window: float,
        retain: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.retain = max(retain, window)
        self.max_sessions = max_sessions
        self._clock = clock
        self._streams: dict[str, StreamViewers] = {}
        self._session_count = 0
        self._dropped = 0

    @property
    def session_count(self) -> int:
        """Number of sessions held, across all streams."""
        return self._session_count

    def touch(
        self, stream_id: str, viewer_key: str, publishing_session: str | None
    ) -> None:
        """Record a media playlist or segment fetch by ``viewer_key``."""
        now = self._clock()
        viewers = self._stream(stream_id, publishing_session, now)
        self._forget_stale(viewers, now)
        last_seen = viewers.sessions.get(viewer_key)
        if last_seen is None:
            if self._session_count >= self.max_sessions:
                self._make_room(now)
            viewers.total_views += 1
            self._session_count += 1
        viewers.sessions[viewer_key] = now
        viewers.sessions.move_to_end(viewer_key)
        viewers.last_activity = now
        if last_seen is None or last_seen < now - self.window:
            count = self._count_active(viewers, now)
            viewers.peak_viewers = max(viewers.peak_viewers, count)

    def seen_within(self, stream_id: str, viewer_key: str, seconds: float) -> bool:
        """Return whether the session fetched media in the last ``seconds``."""
        viewers = self._streams.get(stream_id)
        last_seen = None if viewers is None else viewers.sessions.get(viewer_key)
        return last_seen is not None and last_seen >= self._clock() - seconds

    def stats(self, stream_id: str, publishing_session: str | None) -> ViewerStats:
        """Return the stream's viewer statistics for its publishing session.

        A new ``publishing_session`` resets them. None (the stream is not
        live) keeps those of the last session.
        """
        viewers = self._streams.get(stream_id)
        if viewers is None:
            return NO_VIEWERS
        now = self._clock()
        if publishing_session is not None:
            viewers = self._stream(stream_id, publishing_session, now)
        self._forget_stale(viewers, now)
        return ViewerStats(
            viewer_count=self._count_active(viewers, now),
            peak_viewers=viewers.peak_viewers,
            total_views=viewers.total_views,
        )

    def _stream(
        self, stream_id: str, publishing_session: str | None, now: float
    ) -> StreamViewers:
        viewers = self._streams.get(stream_id)
        if viewers is not None and (
            publishing_session is None
            or viewers.publishing_session == publishing_session
        ):
            return viewers
        if viewers is not None:
            self._session_count -= len(viewers.sessions)
        elif len(self._streams) >= MAX_TRACKED_STREAMS:
            self._drop_oldest_stream()
        viewers = StreamViewers(publishing_session, last_activity=now)
        self._streams[stream_id] = viewers
        return viewers

    def _count_active(self, viewers: StreamViewers, now: float) -> int:
        # Sessions are ordered by their last fetch, so the active ones are
        # at the end.
        count = 0
        for last_seen in reversed(viewers.sessions.values()):
            if last_seen < now - self.window:
                break
            count += 1
        return count

    def _forget_stale(self, viewers: StreamViewers, now: float) -> None:
        sessions = viewers.sessions
        while sessions:
            key, last_seen = next(iter(sessions.items()))
            if last_seen >= now - self.retain:
                break
            del sessions[key]
            self._session_count -= 1

    def _make_room(self, now: float) -> None:
        for viewers in self._streams.values():
            self._forget_stale(viewers, now)
        if self._session_count < self.max_sessions:
            return
        oldest = min(
            (viewers for viewers in self._streams.values() if viewers.sessions),
            key=lambda viewers: next(iter(viewers.sessions.values())),
            default=None,
        )
        if oldest is None:
            return
        oldest.sessions.popitem(last=False)
        self._session_count -= 1
        self._dropped += 1
        if self._dropped in (1, 10, 100) or self._dropped % 1000 == 0:
            logger.warning(
                "viewer sessions at the maximum of %d: dropped the least recently"
                " active session (%d dropped so far)",
                self.max_sessions,
                self._dropped,
            )

    def _drop_oldest_stream(self) -> None:
        stream_id = min(self._streams, key=lambda key: self._streams[key].last_activity)
        self._session_count -= len(self._streams.pop(stream_id).sessions)


VIEWERS = web.AppKey("viewers", ViewerTracker)


def publishing_session_id(hub: Hub, stream_id: str) -> str | None:
    """Return the id of the stream's publishing session, or None when offline.

    The id stays the same across publisher reconnects, so viewer statistics
    reset only when a new session starts.
    """
    return hub.session_id(stream_id)


def viewer_stats(app: web.Application, stream_id: str) -> dict[str, int]:
    """Return viewer_count, peak_viewers and total_views for the status response.

    An application without a tracker (one built without the HLS routes)
    reports zeros.
    """
    tracker = app.get(VIEWERS)
    if tracker is None:
        return NO_VIEWERS.as_json()
    session = publishing_session_id(app[HUB], stream_id)
    return tracker.stats(stream_id, session).as_json()
