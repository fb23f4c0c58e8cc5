"""A live session's transcoding ladder: the glue between the source and renditions.

``LiveLadder`` taps the source segmenter for its samples and segment
boundaries, feeds the transcoder's threads, and packages what they encode
into one HLS rendition each, beside the source in the same multivariant
playlist. Everything here runs on the event loop; the transcoder's callbacks
come back to it through ``call_soon_threadsafe``.

A monitor task, once a second, watches each rendition's lag behind the
source. When the ladder stays behind real time for SHED_AFTER_SECONDS, the
most expensive rendition still running is shed (stopped and left out of the
multivariant playlist), one at a time, and logged and reported in status.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from realcast_box.hls.follower import FollowerPackager
from realcast_box.hls.segmenter import Segmenter
from realcast_box.hls.timeline import PendingSample
from realcast_box.media.codecs import AacConfig, AvcConfig
from realcast_box.media.ladder import Cut, DroppedQuality, Quality, RenditionPlan
from realcast_box.media.transcode import (
    AudioInput,
    EncodedAudio,
    EncodedVideo,
    Transcoder,
    VideoInput,
)

logger = logging.getLogger(__name__)

# The placeholder the multivariant playlist waits for until the renditions
# are planned (at the first decoded frames).
PLAN_PLACEHOLDER = "(ladder)"
# A rendition whose oldest source frame not yet taken arrived at the box
# more than this many seconds ago counts as behind real time.
LAG_LIMIT_SECONDS = 4.0
# Arrival times of source frames kept for measuring lag (about 30 s at 60 fps).
ARRIVALS_KEPT = 2000
# Behind real time this long in a row sheds a rendition. NOTE: these
# thresholds are chosen, not tuned on slow boxes.
SHED_AFTER_SECONDS = 5.0
# After shedding one rendition, wait this long before the next, so the
# relief of the first shows.
SHED_COOLDOWN_SECONDS = 10.0
# The multivariant playlist waits at most this long after the source's
# first segment for renditions to have theirs.
MULTIVARIANT_WAIT_SECONDS = 6.0
MONITOR_INTERVAL = 1.0
# Seconds to wait for the threads to encode what is queued at the end.
FINISH_TIMEOUT = 20.0
# AAC frames kept until the renditions are planned (about 10 s at 48 kHz).
EARLY_AUDIO_FRAMES = 500
# Source segments remembered for the gap entries of renditions.
WRITTEN_KEPT = 64


@dataclass
class RenditionStatus:
    """The state of one rendition, as the stream status reports it."""

    name: str
    state: str  # starting, active, restarting, shed, failed, dropped
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    bitrate: int | None = None  # kbps
    encoder: str | None = None
    speed: float | None = None
    reason: str | None = None


class LiveLadder:
    """The transcoded renditions of one publishing session."""

    def __init__(
        self,
        *,
        stream_id: str,
        session_id: str,
        source: Segmenter,
        profile: dict[str, Any],
        hardware_encoder: str | None,
        segment_duration: float,
        window: int,
        realtime: bool = True,
        part_duration: float | None = None,
    ) -> None:
        """``realtime`` False waits for the transcoder instead of dropping
        frames or shedding renditions, for offline runs (the benchmark).
        ``part_duration`` makes the renditions low-latency HLS with that
        part target, as the source is."""
        self._stream_id = stream_id
        self._realtime = realtime
        self._session_id = session_id
        self._source = source
        self._profile_id = profile["id"]
        self._qualities = [Quality.from_json(q) for q in profile["qualities"]]
        self._segment_duration = segment_duration
        self._window = window
        self._part_duration = part_duration
        self._log_name = f"stream {stream_id} ladder"
        self._loop = asyncio.get_running_loop()
        self._directory = source.files.multivariant_directory
        self._multivariant = source.files.multivariant
        self._multivariant.expect([source.files.rendition, PLAN_PLACEHOLDER])
        self._packagers: dict[str, FollowerPackager] = {}
        self._plans: dict[str, RenditionPlan] = {}
        self._status: dict[str, RenditionStatus] = {
            q.name: RenditionStatus(q.name, "starting", bitrate=q.bitrate)
            for q in self._qualities
        }
        # (duration, discontinuity) of the source's recent segments.
        self._written: OrderedDict[int, tuple[float, bool]] = OrderedDict()
        # (pts, monotonic arrival time) of source frames given to the transcoder.
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=ARRIVALS_KEPT)
        self._dropping = False
        self._rejected_logged = 0
        self._behind_since: float | None = None
        self._last_shed = 0.0
        self._source_ready_at: float | None = None
        # Audio that came before the renditions were planned, for their first
        # segments.
        self._early_audio: deque[EncodedAudio] = deque(maxlen=EARLY_AUDIO_FRAMES)
        self._planned = False
        # Set when no rendition is left to feed: the transcoder is stopped.
        self._idle = False
        self._finished = False
        self._transcoder = Transcoder(
            self._qualities,
            audio_bitrate_kbps=int(profile["audio_bitrate"]),
            segment_duration=segment_duration,
            sink=_ThreadSafeSink(self),
            hardware_encoder=hardware_encoder,
            # Read when the first frames are decoded, after onMetaData came.
            source_fps=lambda: source.frame_rate_hint,
            realtime=realtime,
            log_name=self._log_name,
        )
        self._monitor = asyncio.create_task(
            self._watch(), name=f"ladder monitor {stream_id}"
        )
        source.add_tap(self)
        logger.info(
            "%s: transcoding with profile %s (%s) on %s",
            self._log_name,
            self._profile_id,
            ", ".join(q.name for q in self._qualities),
            hardware_encoder or "libx264",
        )

    @property
    def profile_id(self) -> str:
        return self._profile_id

    @property
    def transcoder(self) -> Transcoder:
        return self._transcoder

    def packager(self, name: str) -> FollowerPackager | None:
        return self._packagers.get(name)

    def status(self) -> list[dict[str, Any]]:
        """Return each quality's state, encoder, size, frame rate and speed."""
        result = []
        for quality in self._qualities:
            status = self._status[quality.name]
            worker = self._transcoder.worker(quality.name)
            if worker is not None and status.state in ("active", "restarting"):
                status.encoder = worker.encoder_name
                status.width, status.height = worker.width, worker.height
                status.fps = worker.fps
                speed = worker.speed
                status.speed = round(speed, 2) if speed is not None else None
            result.append(dict(vars(status)))
        return result

    # Source tap (event loop).

    def video_sample(
        self, config: AvcConfig, sample: PendingSample, cut: Cut | None
    ) -> None:
        if self._finished or self._idle or (self._dropping and cut is None):
            return
        item = VideoInput(
            config,
            sample.dts,
            sample.dts + sample.composition_offset,
            sample.data,
            sample.keyframe,
            cut,
        )
        if self._transcoder.video(item):
            self._dropping = False
            self._arrivals.append((item.pts, time.monotonic()))
            return
        self._dropping = True
        rejected = self._transcoder.rejected_inputs
        if rejected >= self._rejected_logged * 2 or not self._rejected_logged:
            self._rejected_logged = rejected
            logger.warning(
                "%s: the decoder is behind; dropped source frames until the next "
                "segment (%d rejected so far)",
                self._log_name,
                rejected,
            )

    def audio_sample(self, config: AacConfig, sample: PendingSample) -> None:
        if not self._finished and not self._idle:
            self._transcoder.audio(AudioInput(config, sample.dts, sample.data))

    def segment_written(
        self, sequence: int, duration: float, discontinuity: bool
    ) -> None:
        self._written[sequence] = (duration, discontinuity)
        while len(self._written) > WRITTEN_KEPT:
            self._written.popitem(last=False)
        if self._source_ready_at is None:
            self._source_ready_at = time.monotonic()
            if self._source.video_config is None:
                self._no_video()

    def _no_video(self) -> None:
        """Drop every quality of an audio-only source: there is nothing to scale."""
        for status in self._status.values():
            if status.state == "starting":
                status.state = "dropped"
                status.reason = "the source has no video"
        logger.info("%s: the source has no video; no renditions", self._log_name)
        self._multivariant.release()
        self._stop_transcoding()

    def _stop_transcoding(self) -> None:
        """Stop decoding and encoding once no rendition is left to feed."""
        if not self._idle:
            self._idle = True
            self._transcoder.abort()

    def media_ended(self) -> None:
        """Close the renditions' open segments: the publisher left."""
        if not self._finished:
            self._transcoder.flush()

    # Transcoder callbacks (event loop, through _ThreadSafeSink).

    def on_planned(
        self,
        renditions: Sequence[RenditionPlan],
        dropped: Sequence[DroppedQuality],
        source_fps: float,
    ) -> None:
        for item in dropped:
            self._status[item.name] = RenditionStatus(
                item.name, "dropped", reason=item.reason
            )
        names = [self._source.files.rendition]
        for plan in renditions:
            directory_name = f"{plan.name}-{self._session_id}"
            self._plans[plan.name] = plan
            self._packagers[plan.name] = FollowerPackager(
                self._directory,
                directory_name,
                target_duration=self._segment_duration,
                window=self._window,
                multivariant=self._multivariant,
                bitrate=(plan.quality.bitrate + self._audio_bitrate()) * 1000,
                frame_rate=plan.fps,
                source_segment=self._source_segment,
                wall_time=self._source.wall_time,
                log_name=f"{self._directory.name}/{directory_name}",
                part_duration=self._part_duration,
            )
            names.append(directory_name)
        self._planned = True
        self._multivariant.expect(names)
        for packet in self._early_audio:
            self.on_audio(packet)
        self._early_audio.clear()
        if not renditions:
            self._stop_transcoding()
        logger.info(
            "%s: source at %.3g fps; renditions %s",
            self._log_name,
            source_fps,
            ", ".join(f"{p.name} {p.width}x{p.height}@{p.fps:g}" for p in renditions)
            or "none",
        )

    def on_video(self, packet: EncodedVideo) -> None:
        packager = self._packagers.get(packet.rendition)
        if packager is None:
            return
        packager.add_video(packet)
        status = self._status[packet.rendition]
        if status.state == "starting" and packager.ready:
            status.state = "active"
        elif status.state == "restarting" and packet.cut is not None:
            status.state = "active"

    def on_audio(self, packet: EncodedAudio) -> None:
        if not self._planned:
            self._early_audio.append(packet)
            return
        for packager in self._packagers.values():
            packager.add_audio(packet)

    def on_segment_end(self, rendition: str) -> None:
        packager = self._packagers.get(rendition)
        if packager is not None:
            packager.end_segment()

    def on_encoder_failed(self, rendition: str, encoder: str, error: str) -> None:
        """Restart the rendition on libx264 at a segment no output has started."""
        packager = self._packagers.get(rendition)
        if packager is None or self._finished:
            return
        packager.drop_open_segment()
        resume_at = self._source.files.next_sequence + 1
        self._source.request_discontinuity(resume_at)
        self._transcoder.resume(rendition, resume_at)
        status = self._status[rendition]
        status.state = "restarting"
        status.reason = f"{encoder} failed ({error}); restarting on libx264"
        logger.warning(
            "%s: rendition %s: %s failed (%s); it resumes on libx264 at segment %d "
            "with a discontinuity in every rendition",
            self._log_name,
            rendition,
            encoder,
            error,
            resume_at,
        )

    def on_rendition_stopped(self, rendition: str, reason: str) -> None:
        status = self._status[rendition]
        if status.state != "shed":
            status.state = "failed"
            status.reason = reason
        self._retire(rendition)

    # Shedding and the end.

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL)
            try:
                self._check()
            except Exception:
                logger.exception("%s: monitor check failed", self._log_name)

    def _check(self) -> None:
        now = time.monotonic()
        failure = self._transcoder.failure
        if failure is not None and not self._idle:
            logger.error("%s: transcoding stopped: %s", self._log_name, failure)
            for name, status in self._status.items():
                if status.state in ("starting", "active", "restarting"):
                    status.state = "failed"
                    status.reason = f"the decoder failed: {failure}"
                    self._retire(name)
            self._idle = True
        if (
            not self._multivariant.written
            and self._source_ready_at is not None
            and now - self._source_ready_at > MULTIVARIANT_WAIT_SECONDS
        ):
            waiting = [
                name for name, s in self._status.items() if s.state == "starting"
            ]
            logger.warning(
                "%s: renditions %s have no segment %g s after the source; the "
                "multivariant playlist lists the source without them",
                self._log_name,
                ", ".join(waiting) or "(not planned)",
                MULTIVARIANT_WAIT_SECONDS,
            )
            self._multivariant.release()
        if self._realtime and self._behind():
            if self._behind_since is None:
                self._behind_since = now
            elif (
                now - self._behind_since >= SHED_AFTER_SECONDS
                and now - self._last_shed >= SHED_COOLDOWN_SECONDS
            ):
                self._shed_one()
                self._last_shed = now
                self._behind_since = None
        else:
            self._behind_since = None

    def lag_seconds(self, rendition: str) -> float | None:
        """Seconds the oldest source frame the rendition has not taken has waited.

        Near zero while it keeps up, growing when it does not. Frames inside
        the encoder (its lookahead) count as taken, so a low frame rate is
        not lag. None before the rendition has a worker or frames have come.
        """
        worker = self._transcoder.worker(rendition)
        arrivals = self._arrivals
        if worker is None or not arrivals:
            return None
        now = time.monotonic()
        last_pts = worker.consumed_pts
        if last_pts is None:
            return now - arrivals[0][1]
        # The first frame that arrived after the taken one is waiting.
        # NOTE: arrivals are in decode order, so with source B-frames the
        # search is off by the few frames of the reordering.
        index = bisect.bisect_right(arrivals, last_pts, key=lambda item: item[0])
        if index >= len(arrivals):
            return 0.0
        return now - arrivals[index][1]

    def _running(self) -> list[str]:
        return [
            name
            for name in self._packagers
            if self._status[name].state in ("starting", "active", "restarting")
        ]

    def _behind(self) -> bool:
        if self._dropping:
            return True
        for name in self._running():
            lag = self.lag_seconds(name)
            if lag is not None and lag > LAG_LIMIT_SECONDS:
                return True
        return False

    def _shed_one(self) -> None:
        running = self._running()
        if not running:
            return
        victim = max(running, key=lambda name: self._plans[name].quality.cost)
        lags = {name: self.lag_seconds(name) for name in running}
        reason = (
            "shed: the box could not transcode in real time "
            f"(lag {lags[victim] or 0:.1f} s); the most expensive rendition stops first"
        )
        status = self._status[victim]
        status.state = "shed"
        status.reason = reason
        status.speed = None
        logger.warning(
            "%s: shedding rendition %s: behind real time for %g s (lags %s)",
            self._log_name,
            victim,
            SHED_AFTER_SECONDS,
            ", ".join(f"{n} {lag or 0:.1f} s" for n, lag in lags.items()),
        )
        self._transcoder.stop_rendition(victim, reason)
        self._retire(victim)

    def _retire(self, rendition: str) -> None:
        packager = self._packagers.get(rendition)
        if packager is None:
            return
        packager.finish(flush=False)
        self._multivariant.remove(packager.rendition)
        if self._planned and not self._running():
            logger.info("%s: no rendition left; transcoding stops", self._log_name)
            self._stop_transcoding()

    def abort(self) -> None:
        """Make a running ``finish`` stop without encoding what is queued."""
        self._transcoder.abort()

    async def finish(self) -> None:
        """Encode what is queued, write the last segments and stop the threads."""
        if self._finished:
            return
        self._finished = True
        self._monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._monitor
        self._transcoder.finish()
        joined = await asyncio.to_thread(self._transcoder.join, FINISH_TIMEOUT)
        if not joined:
            logger.warning(
                "%s: threads still busy after %g s; stopping them",
                self._log_name,
                FINISH_TIMEOUT,
            )
            self._transcoder.abort()
        # Callbacks the threads queued before they ended run before this.
        await asyncio.sleep(0)
        for packager in self._packagers.values():
            packager.finish(flush=joined)
        if PLAN_PLACEHOLDER in self._status or not self._multivariant.written:
            self._multivariant.release()
        logger.info("%s: finished", self._log_name)

    def _audio_bitrate(self) -> int:
        return self._transcoder.audio_bitrate_kbps

    def _source_segment(self, sequence: int) -> tuple[float, bool]:
        """Return the source's (duration, discontinuity) of segment ``sequence``."""
        return self._written.get(sequence, (self._segment_duration, False))


class _ThreadSafeSink:
    """Hands the transcoder's callbacks from its threads to the event loop."""

    def __init__(self, ladder: LiveLadder) -> None:
        self._ladder = ladder
        self._loop = asyncio.get_running_loop()

    def _call(self, callback: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self._loop.call_soon_threadsafe(callback, *args)

    def planned(self, renditions, dropped, source_fps) -> None:
        self._call(self._ladder.on_planned, renditions, dropped, source_fps)

    def video(self, packet: EncodedVideo) -> None:
        self._call(self._ladder.on_video, packet)

    def audio(self, packet: EncodedAudio) -> None:
        self._call(self._ladder.on_audio, packet)

    def segment_end(self, rendition: str) -> None:
        self._call(self._ladder.on_segment_end, rendition)

    def encoder_failed(self, rendition: str, encoder: str, error: str) -> None:
        self._call(self._ladder.on_encoder_failed, rendition, encoder, error)

    def rendition_stopped(self, rendition: str, reason: str) -> None:
        self._call(self._ladder.on_rendition_stopped, rendition, reason)
