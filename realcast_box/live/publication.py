"""One live stream's ingest session and its passthrough HLS packager."""

from __future__ import annotations

import logging
import secrets
import time
from datetime import datetime
from pathlib import Path

from realcast_box.hls.segmenter import Segmenter
from realcast_box.media.flv import parse_audio_tag, parse_video_tag

logger = logging.getLogger(__name__)


class Publication:
    """Media from one publisher for one stream, packaged as HLS as it arrives.

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
        client_address: str,
        started_at: datetime,
        hls_directory: Path,
        segment_duration: float,
        window: int,
    ) -> None:
        self.stream_id = stream_id
        self.app_id = app_id
        self.client_address = client_address
        self.started_at = started_at
        self.started_monotonic = time.monotonic()
        self.last_media_monotonic = self.started_monotonic
        self.ended_monotonic: float | None = None
        self.bytes_received = 0
        self.video_messages = 0
        self.audio_messages = 0
        # The session id in the rendition folder keeps segment URLs unique
        # across publishing sessions, so HTTP caches may keep segments forever.
        self.session_id = secrets.token_hex(4)
        self.segmenter = Segmenter(
            hls_directory,
            target_duration=segment_duration,
            window=window,
            rendition=f"source-{self.session_id}",
        )

    @property
    def duration_seconds(self) -> float:
        end = self.ended_monotonic or time.monotonic()
        return end - self.started_monotonic

    @property
    def finished(self) -> bool:
        return self.ended_monotonic is not None

    def feed_video(self, timestamp: int, payload: bytes) -> None:
        if self.finished:
            return
        tag = parse_video_tag(payload)
        self._count(len(payload))
        self.video_messages += 1
        self.segmenter.add_video(timestamp, tag)

    def feed_audio(self, timestamp: int, payload: bytes) -> None:
        if self.finished:
            return
        tag = parse_audio_tag(payload)
        self._count(len(payload))
        self.audio_messages += 1
        self.segmenter.add_audio(timestamp, tag)

    def feed_metadata(self, metadata: dict) -> None:
        if not self.finished:
            self.segmenter.set_metadata(metadata)

    def finish(self) -> None:
        """Flush the last segment and end the playlists; safe to call twice."""
        if self.finished:
            return
        self.ended_monotonic = time.monotonic()
        try:
            self.segmenter.finish()
        except Exception:
            logger.exception("stream %s: failed to finish HLS output", self.stream_id)

    def _count(self, size: int) -> None:
        self.bytes_received += size
        self.last_media_monotonic = time.monotonic()
