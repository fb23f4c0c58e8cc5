"""One live stream's publishing session and its passthrough HLS packager.

A session outlives its publisher's connection: when the connection drops,
the hub keeps the Publication for the reconnect window, and a publisher that
comes back with the same key attaches to it and continues the same HLS
output. Each connection gets a Publisher, its handle on the session.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from realcast_box.hls.segmenter import Segmenter
from realcast_box.live.health import GAP_MEMORY_SECONDS, IngestHealth, IngestReport
from realcast_box.media.flv import parse_audio_tag, parse_video_tag

if TYPE_CHECKING:
    from realcast_box.live.ladder import LiveLadder

logger = logging.getLogger(__name__)

# Called to drop a publisher's connection, with the reason to log.
Disconnect = Callable[[str], Awaitable[None]]
State = Literal["live", "reconnecting", "ended"]


class Publisher:
    """One connection's hold on a Publication.

    Media from a publisher that has been replaced (a takeover) or whose
    session ended is ignored, so a stale connection cannot write into the
    session of the one that replaced it.
    """

    def __init__(
        self, publication: Publication, client_address: str, disconnect: Disconnect
    ) -> None:
        self.publication = publication
        self.client_address = client_address
        self.disconnect = disconnect

    @property
    def active(self) -> bool:
        """Whether this publisher still feeds its publication."""
        publication = self.publication
        return publication.publisher is self and not publication.finished

    def feed_video(self, timestamp: int, payload: bytes) -> None:
        # Inlined active check, because this runs for every message.
        publication = self.publication
        if publication.publisher is self and publication.ended_monotonic is None:
            publication.feed_video(timestamp, payload)

    def feed_audio(self, timestamp: int, payload: bytes) -> None:
        publication = self.publication
        if publication.publisher is self and publication.ended_monotonic is None:
            publication.feed_audio(timestamp, payload)

    def feed_metadata(self, metadata: dict) -> None:
        if self.active:
            self.publication.feed_metadata(metadata)


class Publication:
    """Media of one publishing session, packaged as HLS as it arrives.

    Packaging is cheap (no decoding), so it runs on the event loop. The feed
    methods raise ``UnsupportedCodec`` or ``InvalidTag`` from
    ``realcast_box.media.flv`` on media the box cannot package; the caller
    closes the connection with that message.
    """

    def __init__(
        self,
        *,
        stream_id: str,
        app_id: str,
        started_at: datetime,
        hls_directory: Path,
        segment_duration: float,
        window: int,
        first_sequence: int = 0,
        part_duration: float | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.app_id = app_id
        self.started_at = started_at
        self.started_monotonic = time.monotonic()
        self.last_media_monotonic = self.started_monotonic
        self.ended_monotonic: float | None = None
        self.publisher: Publisher | None = None
        # When the last publisher left, while the session waits for the next.
        self.detached_at: datetime | None = None
        self.publisher_count = 0
        self.bytes_received = 0
        self.video_messages = 0
        self.audio_messages = 0
        self.health = IngestHealth()
        # The session id in the rendition folder keeps segment URLs unique
        # across publishing sessions, so HTTP caches may keep segments forever.
        self.session_id = secrets.token_hex(4)
        self.segmenter = Segmenter(
            hls_directory,
            target_duration=segment_duration,
            window=window,
            rendition=f"source-{self.session_id}",
            first_sequence=first_sequence,
            part_duration=part_duration,
        )
        # The transcoded renditions, when the stream has a profile.
        self.ladder: LiveLadder | None = None

    @property
    def duration_seconds(self) -> float:
        end = self.ended_monotonic or time.monotonic()
        return end - self.started_monotonic

    @property
    def finished(self) -> bool:
        return self.ended_monotonic is not None

    @property
    def state(self) -> State:
        if self.finished:
            return "ended"
        return "live" if self.publisher is not None else "reconnecting"

    @property
    def client_address(self) -> str | None:
        """Address of the connected publisher, or None while reconnecting."""
        return self.publisher.client_address if self.publisher else None

    def attach(self, client_address: str, disconnect: Disconnect) -> Publisher:
        """Make a new connection the publisher; the current one must be detached."""
        if self.finished:
            raise RuntimeError(f"stream {self.stream_id}: the session has ended")
        if self.publisher is not None:
            raise RuntimeError(f"stream {self.stream_id}: a publisher is attached")
        self.publisher = Publisher(self, client_address, disconnect)
        self.publisher_count += 1
        self.detached_at = None
        self.last_media_monotonic = time.monotonic()
        self.health = IngestHealth()
        return self.publisher

    def detach(self) -> Publisher | None:
        """Drop the current publisher and close its part of the HLS output."""
        publisher, self.publisher = self.publisher, None
        if publisher is None or self.finished:
            return publisher
        self.detached_at = datetime.now(UTC).replace(microsecond=0)
        try:
            self.segmenter.discontinuity()
        except Exception:
            logger.exception(
                "stream %s: failed to close the publisher's HLS output",
                self.stream_id,
            )
        return publisher

    def ingest_report(self) -> IngestReport | None:
        """Return what the box measures in the connected publisher's feed."""
        if self.publisher is None or self.finished:
            return None
        segmenter = self.segmenter
        return self.health.report(
            segmenter.video_config,
            segmenter.audio_config,
            video_gaps=segmenter.recent_gaps(GAP_MEMORY_SECONDS),
        )

    def feed_video(self, timestamp: int, payload: bytes) -> None:
        if self.ended_monotonic is not None:
            return
        tag = parse_video_tag(payload)
        self.bytes_received += len(payload)
        self.last_media_monotonic = time.monotonic()
        self.video_messages += 1
        if tag.data and not tag.is_sequence_header:
            self.health.add_video(
                timestamp,
                len(tag.data),
                keyframe=tag.keyframe,
                composition_time=tag.composition_time,
            )
        self.segmenter.add_video(timestamp, tag)

    def feed_audio(self, timestamp: int, payload: bytes) -> None:
        if self.ended_monotonic is not None:
            return
        tag = parse_audio_tag(payload)
        self.bytes_received += len(payload)
        self.last_media_monotonic = time.monotonic()
        self.audio_messages += 1
        if tag.data and not tag.is_sequence_header:
            self.health.add_audio(timestamp, len(tag.data))
        self.segmenter.add_audio(timestamp, tag)

    def feed_metadata(self, metadata: dict) -> None:
        if not self.finished:
            self.segmenter.set_metadata(metadata)

    def finish(self) -> None:
        """Flush the last segment and end the playlists; safe to call twice."""
        if self.finished:
            return
        self.ended_monotonic = time.monotonic()
        self.publisher = None
        try:
            self.segmenter.finish()
        except Exception:
            logger.exception("stream %s: failed to finish HLS output", self.stream_id)
