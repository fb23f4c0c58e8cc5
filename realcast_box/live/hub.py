"""The publication hub: one Publication per live stream.

The RTMP server asks the hub to start a publication once a stream key checks
out, feeds it media, and ends it when the connection goes away. The hub keeps
the stream's row in SQLite in step (live, offline, timestamps) and owns the
HLS packager of each live stream.
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
from realcast_box.live.publication import Publication
from realcast_box.store import streams as stream_store
from realcast_box.store.db import Database

logger = logging.getLogger(__name__)

# Called to drop the publisher's connection, with the reason to log.
Disconnect = Callable[[str], Awaitable[None]]


class PublishRejected(RealcastError):
    """A publish attempt was refused; ``code`` is the NetStream status code."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class Hub:
    """Registry of live publications, keyed by stream id."""

    def __init__(
        self,
        database: Database,
        hls_root: Path,
        *,
        segment_duration: float,
        window: int,
        takeover_after: float,
    ) -> None:
        self._database = database
        self._hls_root = hls_root
        self._segment_duration = segment_duration
        self._window = window
        self._takeover_after = takeover_after
        self._publications: dict[str, Publication] = {}
        self._disconnects: dict[Publication, Disconnect] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def hls_root(self) -> Path:
        return self._hls_root

    def is_live(self, stream_id: str) -> bool:
        return stream_id in self._publications

    def publication(self, stream_id: str) -> Publication | None:
        return self._publications.get(stream_id)

    def publications(self) -> list[Publication]:
        return list(self._publications.values())

    async def start(
        self, stream: dict, client_address: str, disconnect: Disconnect
    ) -> Publication:
        """Start publishing ``stream`` (its database row) from a new connection.

        Raises PublishRejected when another publisher is live on the stream and
        has sent media within the takeover window. A live publisher that has
        been silent longer (a dead connection OBS is reconnecting around) is
        disconnected and replaced.
        """
        stream_id = stream["id"]
        async with self._lock:
            if self._closed:
                raise PublishRejected(
                    "NetStream.Publish.Rejected", "server is shutting down"
                )
            current = self._publications.get(stream_id)
            if current is not None:
                idle = time.monotonic() - current.last_media_monotonic
                if idle < self._takeover_after:
                    raise PublishRejected(
                        "NetStream.Publish.BadName",
                        f"stream {stream_id} is already being published",
                    )
                logger.info(
                    "stream %s: publisher %s silent for %.1f s, taken over by %s",
                    stream_id,
                    current.client_address,
                    idle,
                    client_address,
                )
                await self._end(current, "taken over by a new publisher")

            directory = self._hls_root / stream_id
            await asyncio.to_thread(shutil.rmtree, directory, True)
            started_at = datetime.now(UTC).replace(microsecond=0)
            publication = Publication(
                stream_id=stream_id,
                app_id=stream["app_id"],
                client_address=client_address,
                started_at=started_at,
                hls_directory=directory,
                segment_duration=self._segment_duration,
                window=self._window,
            )
            self._publications[stream_id] = publication
            self._disconnects[publication] = disconnect
            await stream_store.mark_stream_live(self._database, stream_id, started_at)
        logger.info(
            "stream %s: publishing from %s", stream_id, publication.client_address
        )
        return publication

    async def stop(self, publication: Publication, reason: str) -> None:
        """End ``publication`` after its connection closed; safe to call twice."""
        async with self._lock:
            await self._end(publication, reason, disconnect=False)

    async def kick(self, stream_id: str, reason: str) -> None:
        """Disconnect the live publisher of ``stream_id``, if any."""
        async with self._lock:
            publication = self._publications.get(stream_id)
            if publication is not None:
                await self._end(publication, reason)

    async def remove_output(self, stream_id: str) -> None:
        """Delete the HLS files of a stream that is not live, after its deletion."""
        async with self._lock:
            if stream_id in self._publications:
                return
            directory = self._hls_root / stream_id
            if directory.exists():
                await asyncio.to_thread(shutil.rmtree, directory)

    async def close(self) -> None:
        """End every publication; later publish attempts are rejected."""
        async with self._lock:
            self._closed = True
            for publication in list(self._publications.values()):
                await self._end(publication, "server shutting down")

    async def _end(
        self, publication: Publication, reason: str, *, disconnect: bool = True
    ) -> None:
        if self._publications.get(publication.stream_id) is not publication:
            return
        del self._publications[publication.stream_id]
        disconnect_callback = self._disconnects.pop(publication, None)
        publication.finish()
        ended_at = datetime.now(UTC).replace(microsecond=0)
        try:
            await stream_store.mark_stream_offline(
                self._database, publication.stream_id, ended_at
            )
        except Exception:
            logger.exception(
                "stream %s: failed to mark the stream offline", publication.stream_id
            )
        logger.info(
            "stream %s: unpublished after %.1f s (%s)",
            publication.stream_id,
            publication.duration_seconds,
            reason,
        )
        if disconnect and disconnect_callback is not None:
            await disconnect_callback(reason)
