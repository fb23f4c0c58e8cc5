"""Recordings of live sessions and pulled URLs: start, stop, finalize, recover.

``RecordingService`` owns every active recording, at most one per stream.
A live recording taps the session's passthrough packager (``LiveRecorder``);
a pulled recording copies an external URL with PyAV in a worker thread
(``Puller``). Both write fragmented MP4 to ``recordings/<id>.part.mp4``.
Stopping moves the row to ``processing``, remuxes the file into
``recordings/<id>.mp4`` with fast start, writes the poster frame
``recordings/<id>.jpg`` and marks the row ``completed`` (or ``failed`` with
a reason). Each outcome is published on the event bus.

A live session is recorded automatically when the stream's
``settings.recording`` is true, or when it is unset and the app's
``settings.recording_enabled`` is true. The recording ends with the
session. When the session's codec config changes mid-recording, that
recording is completed and a new one, with the same title, goes on from the
first segment of the new config.

At start the service finds rows left in ``recording`` or ``processing`` by
a crash and finalizes their files in the background. It also deletes
recordings older than ``retention_days`` (0 keeps them all) and files that
no row refers to, once at start and then every hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import av

from realcast_box.errors import RealcastError
from realcast_box.events import (
    RECORDING_FAILED,
    RECORDING_READY,
    RECORDING_STARTED,
    STREAM_LIVE,
    STREAM_OFFLINE,
    Event,
    EventBus,
)
from realcast_box.live.hub import Hub
from realcast_box.live.recorder import CODEC_CHANGED, DISK_FULL, LiveRecorder
from realcast_box.media import recording as media
from realcast_box.store import recordings as recording_store
from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp, new_id, utc_now

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 3600
# Files without a row are deleted only once unchanged this long, so a file
# whose row is being inserted is never taken for an orphan.
ORPHAN_MIN_AGE_SECONDS = 600
# How often the free space is checked while a URL is pulled.
DISK_CHECK_SECONDS = 1.0
FILE_SUFFIXES = (".part.mp4", ".mp4", ".jpg")


class RecordingConflict(RealcastError):
    """The stream cannot start a recording now (409); the message gives the reason."""


@dataclass(eq=False)
class _Active:
    recording_id: str
    stream_id: str
    app_id: str
    title: str
    description: str
    recorder: LiveRecorder | None = None
    puller: media.Puller | None = None
    pull_task: asyncio.Task | None = None
    failure: str | None = None


def should_record(app_settings: Any, stream_settings: Any) -> bool:
    """Return whether a new session is recorded automatically."""
    if isinstance(stream_settings, dict):
        choice = stream_settings.get("recording")
        if isinstance(choice, bool):
            return choice
    if isinstance(app_settings, dict):
        return app_settings.get("recording_enabled") is True
    return False


class RecordingService:
    """Active recordings of the box, and the files under ``directory``."""

    def __init__(
        self,
        database: Database,
        hub: Hub,
        events: EventBus,
        directory: Path,
        *,
        min_free_bytes: int,
        retention_days: int,
    ) -> None:
        self._database = database
        self._hub = hub
        self._events = events
        self.directory = directory
        self._min_free_bytes = min_free_bytes
        self._retention_days = retention_days
        self._active: dict[str, _Active] = {}
        self._tasks: set[asyncio.Task] = set()
        self._prune_task: asyncio.Task | None = None
        self._unsubscribe = None
        self._closed = False

    # Paths.

    def part_path(self, recording_id: str) -> Path:
        return self.directory / f"{recording_id}.part.mp4"

    def file_path(self, recording_id: str) -> Path:
        return self.directory / f"{recording_id}.mp4"

    def thumbnail_path(self, recording_id: str) -> Path:
        return self.directory / f"{recording_id}.jpg"

    # Lifecycle.

    async def start(self) -> None:
        """Recover unfinished recordings, subscribe to sessions, start pruning."""
        self.directory.mkdir(parents=True, exist_ok=True)
        await self._recover()
        self._unsubscribe = self._events.subscribe(
            self._on_session_event, types=(STREAM_LIVE, STREAM_OFFLINE)
        )
        await self._prune_logged()
        self._prune_task = asyncio.create_task(
            self._prune_periodically(), name="recording pruner"
        )

    async def close(self) -> None:
        """Stop every active recording and wait until its file is finalized."""
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._prune_task is not None:
            self._prune_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prune_task
        for active in list(self._active.values()):
            self._begin_finish(active, None)
        # NOTE: a long recording's remux holds up shutdown; one that is
        # killed meanwhile is finalized again at the next start.
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    @property
    def active_count(self) -> int:
        """Number of recordings in progress (live and pulled)."""
        return len(self._active)

    def active_recording_id(self, stream_id: str) -> str | None:
        active = self._active.get(stream_id)
        return active.recording_id if active is not None else None

    # Start and stop.

    async def start_live(
        self, stream: dict[str, Any], *, title: str, description: str
    ) -> dict[str, Any]:
        """Record the stream's live session; RecordingConflict when impossible."""
        stream_id = stream["id"]
        self._check_can_start(stream_id)
        publication = self._hub.publication(stream_id)
        if publication is None:
            raise RecordingConflict(
                f"stream {stream_id} is not live: start publishing first, or set"
                " settings.recording to true to record each session"
            )
        active = _Active(new_id("rec"), stream_id, stream["app_id"], title, description)
        await self._insert(active, source="live", stream_url=None)
        active.recorder = self._new_recorder(active.recording_id, publication)
        active.recorder.attach()
        self._active[stream_id] = active
        row = await self._started(active)
        if publication.finished:
            # The session ended while the row was inserted, so no
            # stream.offline event will stop this recording.
            self._begin_finish(active, None)
        return row

    async def start_pull(
        self, stream: dict[str, Any], url: str, *, title: str, description: str
    ) -> dict[str, Any]:
        """Record ``url`` (already checked against the allow-list) for the stream."""
        stream_id = stream["id"]
        self._check_can_start(stream_id)
        active = _Active(new_id("rec"), stream_id, stream["app_id"], title, description)
        await self._insert(active, source="pull", stream_url=url)
        active.puller = media.Puller(url, self.part_path(active.recording_id))
        self._active[stream_id] = active
        active.pull_task = asyncio.create_task(
            self._run_pull(active), name=f"pull {active.recording_id}"
        )
        return await self._started(active)

    async def stop(self, stream_id: str) -> dict[str, Any] | None:
        """Stop the stream's active recording and return its finalized row.

        Returns None when the stream has no active recording.
        """
        active = self._active.get(stream_id)
        if active is None:
            return None
        await asyncio.shield(self._begin_finish(active, None))
        return await recording_store.get_recording(self._database, active.recording_id)

    def _check_can_start(self, stream_id: str) -> None:
        if self._closed:
            raise RecordingConflict("the box is shutting down")
        active = self._active.get(stream_id)
        if active is not None:
            raise RecordingConflict(
                f"stream {stream_id} is already being recorded as"
                f" {active.recording_id}: stop that recording first with"
                f" POST /api/recordings/stop/{stream_id}"
            )

    async def _insert(
        self, active: _Active, *, source: str, stream_url: str | None
    ) -> None:
        row = {
            "id": active.recording_id,
            "app_id": active.app_id,
            "stream_id": active.stream_id,
            "title": active.title,
            "description": active.description,
            "source": source,
            "stream_url": stream_url,
            "created_at": format_timestamp(utc_now()),
        }
        try:
            await recording_store.create_recording(self._database, row)
        except recording_store.ActiveRecordingExists:
            raise RecordingConflict(
                f"stream {active.stream_id} is already being recorded"
            ) from None

    async def _started(self, active: _Active) -> dict[str, Any]:
        logger.info(
            "recording %s of stream %s started", active.recording_id, active.stream_id
        )
        row = await recording_store.get_recording(self._database, active.recording_id)
        assert row is not None
        await self._publish(RECORDING_STARTED, row)
        return row

    def _new_recorder(self, recording_id: str, publication: Any) -> LiveRecorder:
        return LiveRecorder(
            recording_id,
            self.part_path(recording_id),
            publication.segmenter,
            min_free_bytes=self._min_free_bytes,
            on_stop=self._recorder_stopped,
        )

    # Session events (called inside the hub's publish, so they return quickly).

    async def _on_session_event(self, event: Event) -> None:
        stream_id = event.stream_id
        if stream_id is None:
            return
        if event.type == STREAM_OFFLINE:
            active = self._active.get(stream_id)
            if active is not None and active.recorder is not None:
                self._begin_finish(active, None)
            return
        settings = await recording_store.recording_settings(self._database, stream_id)
        if settings is None or not should_record(
            json.loads(settings["app_settings"]),
            json.loads(settings["stream_settings"]),
        ):
            return
        stream = {"id": stream_id, "app_id": settings["app_id"]}
        try:
            await self.start_live(
                stream, title=settings["title"], description=settings["description"]
            )
        except RecordingConflict as exc:
            logger.warning("stream %s: not recorded automatically: %s", stream_id, exc)

    def _recorder_stopped(
        self, recorder: LiveRecorder, reason: str, sequence: int, duration: float
    ) -> None:
        active = next(
            (a for a in self._active.values() if a.recorder is recorder), None
        )
        if active is None:
            return
        if reason != CODEC_CHANGED:
            self._begin_finish(active, reason)
            return
        publication = self._hub.publication(active.stream_id)
        if publication is None:
            self._begin_finish(active, None)
            return
        # The new recording starts with the segment that the old one refused.
        follower = _Active(
            new_id("rec"),
            active.stream_id,
            active.app_id,
            active.title,
            active.description,
        )
        follower.recorder = self._new_recorder(follower.recording_id, publication)
        follower.recorder.attach()
        follower.recorder.segment_written(sequence, duration, False)
        del self._active[active.stream_id]
        self._active[active.stream_id] = follower
        self._track(self._split(active, follower))

    async def _split(self, ended: _Active, follower: _Active) -> None:
        # NOTE: a follower stopped before its row is inserted below is
        # finalized without a row to update, so its file is only removed
        # later as an orphan.
        await recording_store.mark_processing(self._database, ended.recording_id)
        await self._insert(follower, source="live", stream_url=None)
        await self._started(follower)
        await self._finalize(ended, None)

    # Finishing.

    def _begin_finish(self, active: _Active, failure: str | None) -> asyncio.Task:
        """Stop writing now and finalize in the background; return that task."""
        if self._active.get(active.stream_id) is active:
            del self._active[active.stream_id]
        if active.recorder is not None:
            active.recorder.detach()
        if active.puller is not None:
            active.puller.stop()
        return self._track(self._finish(active, failure))

    def _track(self, coroutine: Any) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _finish(self, active: _Active, failure: str | None) -> None:
        pull_task = active.pull_task
        if pull_task is not None and pull_task is not asyncio.current_task():
            await asyncio.wait({pull_task})
        await recording_store.mark_processing(self._database, active.recording_id)
        await self._finalize(active, failure or active.failure)

    async def _finalize(self, active: _Active, failure: str | None) -> None:
        recording_id = active.recording_id
        try:
            await self._finalize_file(recording_id, failure)
        except Exception:
            logger.exception("recording %s: failed to finalize", recording_id)
            await recording_store.mark_failed(
                self._database, recording_id, "finalize_failed"
            )
            await self._publish_row(RECORDING_FAILED, recording_id)

    async def _finalize_file(self, recording_id: str, failure: str | None) -> None:
        part = self.part_path(recording_id)
        target = self.file_path(recording_id)
        result: media.FinalizedFile | None = None
        if failure is None:
            try:
                if part.exists() or not target.exists():
                    result = await asyncio.to_thread(media.finalize, part, target)
                else:
                    # The remux finished before a crash, but the status update did not.
                    result = await asyncio.to_thread(media.probe, target)
            except media.RecordingFileError as exc:
                failure = f"unreadable: {exc}"
        if failure is not None or result is None:
            size = part.stat().st_size if part.exists() else None
            await recording_store.mark_failed(
                self._database, recording_id, failure or "unreadable", file_size=size
            )
            logger.warning("recording %s failed: %s", recording_id, failure)
            await self._publish_row(RECORDING_FAILED, recording_id)
            return
        has_thumbnail = await asyncio.to_thread(self._make_thumbnail, recording_id)
        part.unlink(missing_ok=True)
        await recording_store.mark_completed(
            self._database,
            recording_id,
            duration=result.duration,
            file_size=result.file_size,
            has_thumbnail=has_thumbnail,
        )
        logger.info(
            "recording %s completed: %.1f s, %d bytes",
            recording_id,
            result.duration,
            result.file_size,
        )
        await self._publish_row(RECORDING_READY, recording_id)

    def _make_thumbnail(self, recording_id: str) -> bool:
        try:
            return media.make_thumbnail(
                self.file_path(recording_id), self.thumbnail_path(recording_id)
            )
        except (av.FFmpegError, OSError) as exc:
            logger.warning(
                "recording %s: failed to make the thumbnail: %s", recording_id, exc
            )
            return False

    # Pulling.

    async def _run_pull(self, active: _Active) -> None:
        puller = active.puller
        assert puller is not None
        copy = asyncio.ensure_future(asyncio.to_thread(puller.run))
        while not copy.done():
            await asyncio.wait({copy}, timeout=DISK_CHECK_SECONDS)
            if not copy.done() and self._disk_low():
                active.failure = DISK_FULL
                puller.stop()
        try:
            copy.result()
        except (av.FFmpegError, OSError, media.RecordingFileError) as exc:
            if puller.written == 0:
                active.failure = f"pull_failed: {exc}"
            logger.warning(
                "recording %s: pulling %s failed after %d packets: %s",
                active.recording_id,
                puller.url,
                puller.written,
                exc,
            )
        if self._active.get(active.stream_id) is active:
            # The source ended on its own.
            self._begin_finish(active, None)

    def _disk_low(self) -> bool:
        return shutil.disk_usage(self.directory).free < self._min_free_bytes

    # Recovery and pruning.

    async def _recover(self) -> None:
        rows = await recording_store.list_unfinished(self._database)
        for row in rows:
            await recording_store.mark_processing(self._database, row["id"])
            logger.warning(
                "recording %s of stream %s was left %s; finalizing its file",
                row["id"],
                row["stream_id"],
                row["status"],
            )
            active = _Active(
                row["id"],
                row["stream_id"],
                row["app_id"],
                row["title"],
                row["description"],
            )
            self._track(self._finalize(active, None))

    async def delete_files(self, recording_id: str) -> None:
        for path in (
            self.part_path(recording_id),
            self.file_path(recording_id),
            self.thumbnail_path(recording_id),
        ):
            await asyncio.to_thread(path.unlink, True)

    async def prune(self) -> int:
        """Delete expired recordings and orphaned files; return recordings deleted."""
        deleted = 0
        if self._retention_days > 0:
            before = utc_now() - timedelta(days=self._retention_days)
            for recording_id in await recording_store.list_expired(
                self._database, before
            ):
                await recording_store.delete_recording(self._database, recording_id)
                await self.delete_files(recording_id)
                deleted += 1
        if deleted:
            logger.info(
                "deleted %d recordings older than %d days",
                deleted,
                self._retention_days,
            )
        await self._remove_orphans()
        return deleted

    async def _remove_orphans(self) -> None:
        known = await recording_store.existing_ids(self._database)
        cutoff = time.time() - ORPHAN_MIN_AGE_SECONDS
        for path in self.directory.iterdir():
            recording_id = _recording_id(path.name)
            if recording_id is None or recording_id in known:
                continue
            try:
                stale = path.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if stale:
                logger.info("deleting %s, which no recording refers to", path)
                await asyncio.to_thread(path.unlink, True)

    async def _prune_periodically(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)
            await self._prune_logged()

    async def _prune_logged(self) -> None:
        try:
            await self.prune()
        except Exception:
            logger.exception("failed to prune recordings")

    # Events.

    async def _publish_row(self, event_type: str, recording_id: str) -> None:
        row = await recording_store.get_recording(self._database, recording_id)
        if row is not None:
            await self._publish(event_type, row)

    async def _publish(self, event_type: str, row: dict[str, Any]) -> None:
        data = {
            "recording_id": row["id"],
            "title": row["title"],
            "status": row["status"],
            "duration": row["duration"],
            "file_size": row["file_size"],
            "vod_path": f"/vod/{row['id']}.mp4",
        }
        if row["failure_reason"]:
            data["failure_reason"] = row["failure_reason"]
        await self._events.publish(
            Event(event_type, row["app_id"], row["stream_id"], data)
        )


def _recording_id(name: str) -> str | None:
    """Return the recording id of a file name in the recordings folder."""
    if not name.startswith("rec_"):
        return None
    for suffix in FILE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None
