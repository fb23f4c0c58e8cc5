"""The transcoding ladder: decode the source once, scale and encode per rendition.

Threads, not the event loop, do the work: PyAV releases the GIL inside
FFmpeg's decode, scale and encode calls, so one decode thread and one thread
per rendition use every core. The decode thread also re-encodes the audio
once (AAC at the profile's bit rate), which every rendition shares.

Timing: inputs are on the source packager's output timeline (video at
90 kHz, audio at its sample rate), and every output keeps those timestamps.
Renditions are encoded without B-frames, so each packet's DTS equals its PTS,
and a keyframe is forced on the frame that starts each source segment
(``Cut``). The rendition packagers cut at the same frames and give the
segments the same media sequence numbers, so every rendition's segment N
starts at the same presentation time as the source's.

Queues are bounded. ``Transcoder.video`` never blocks: when the input queue
is full the frame is rejected and counted, and the caller drops frames until
the next segment start. The decode thread waits for a slow rendition's
queue, so a rendition that cannot keep up slows the whole ladder, which the
caller sees as lag and answers by shedding renditions (``stop_rendition``).

The sink's methods are called from worker threads.
"""

from __future__ import annotations

import itertools
import logging
import queue
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import av
from av.audio.resampler import AudioResampler
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from realcast_box.media.codecs import (
    AacConfig,
    AvcConfig,
    annexb_to_length_prefixed,
    avc_config_from_annexb,
    parse_aac_config,
)
from realcast_box.media.encoders import PIXEL_FORMATS, SOFTWARE_ENCODER
from realcast_box.media.ladder import (
    Cut,
    DroppedQuality,
    Quality,
    RenditionPlan,
    fit_size,
    plan_ladder,
)

logger = logging.getLogger(__name__)

VIDEO_TIMEBASE = Fraction(1, 90000)
# Compressed source packets waiting for the decoder, at most: about 8 s of
# 60 fps video with its audio.
INPUT_QUEUE_ITEMS = 720
# Decoded frames waiting for one rendition's scaler, at most. Frames are
# shared between renditions, so the ladder keeps about this many pictures.
RENDITION_QUEUE_FRAMES = 6
# Frames the decoder keeps to measure the source frame rate when the
# publisher's metadata gave none.
FRAME_RATE_SAMPLE = 8
STEREO = "stereo"
# Frame rates a measured rate snaps to.
COMMON_FRAME_RATES = (12.5, 15, 23.976, 24, 25, 29.97, 30, 48, 50, 59.94, 60, 120)
# Seconds a put waits before it checks again whether its target stopped.
PUT_POLL_SECONDS = 0.2
# A rendition whose software encoder fails this many times in a row stops.
MAX_SOFTWARE_FAILURES = 3
# Seconds of media over which ``speed`` is measured.
SPEED_WINDOW_SECONDS = 5.0
X264_PRESET = "veryfast"


@dataclass(frozen=True)
class VideoInput:
    """One source H.264 access unit; times at 90 kHz on the output timeline."""

    config: AvcConfig
    dts: int
    pts: int
    data: bytes  # NAL units with config.nal_length_size length prefixes
    keyframe: bool
    cut: Cut | None


@dataclass(frozen=True)
class AudioInput:
    """One source AAC frame; ``dts`` counts samples at config.sample_rate."""

    config: AacConfig
    dts: int
    data: bytes


@dataclass(frozen=True)
class EncodedVideo:
    rendition: str
    config: AvcConfig
    pts: int  # 90 kHz; DTS is the same, as renditions have no B-frames
    data: bytes  # NAL units with 4-byte length prefixes
    keyframe: bool
    cut: Cut | None


@dataclass(frozen=True)
class EncodedAudio:
    config: AacConfig
    dts: int  # samples at config.sample_rate
    data: bytes


class TranscodeSink(Protocol):
    """Receives the ladder's output; every method runs in a worker thread."""

    def planned(
        self,
        renditions: Sequence[RenditionPlan],
        dropped: Sequence[DroppedQuality],
        source_fps: float,
    ) -> None: ...

    def video(self, packet: EncodedVideo) -> None: ...

    def audio(self, packet: EncodedAudio) -> None: ...

    def encoder_failed(self, rendition: str, encoder: str, error: str) -> None:
        """Report a hardware encoder failure; the rendition waits for ``resume``."""

    def rendition_stopped(self, rendition: str, reason: str) -> None: ...

    def segment_end(self, rendition: str) -> None:
        """Report that the rendition's media so far is all out (after ``flush``)."""


@dataclass(frozen=True)
class EncoderSettings:
    """The settings ``open_encoder`` needs for one rendition."""

    name: str  # FFmpeg encoder name
    width: int
    height: int
    fps: float
    bitrate_kbps: int
    keyframe_interval: int  # frames between keyframes the encoder adds itself
    preset: str = X264_PRESET


def open_encoder(settings: EncoderSettings) -> av.CodecContext:
    """Open an H.264 encoder: no B-frames, forced keyframes as IDR, capped rate."""
    context = av.CodecContext.create(settings.name, "w")
    context.width = settings.width
    context.height = settings.height
    context.pix_fmt = PIXEL_FORMATS.get(settings.name, "yuv420p")
    context.time_base = VIDEO_TIMEBASE
    context.framerate = Fraction(settings.fps).limit_denominator(1001)
    context.bit_rate = settings.bitrate_kbps * 1000
    context.gop_size = settings.keyframe_interval
    context.max_b_frames = 0
    context.flags |= av.codec.context.Flags.global_header
    options = {
        "maxrate": str(settings.bitrate_kbps * 1000),
        "bufsize": str(settings.bitrate_kbps * 2000),
        "forced-idr": "1",
    }
    if settings.name == SOFTWARE_ENCODER:
        options["preset"] = settings.preset
        # At most a second of lookahead, so a low frame rate does not delay
        # the rendition by many seconds (veryfast looks 10 frames ahead).
        options["rc-lookahead"] = str(max(1, min(10, round(settings.fps))))
    context.options = options
    context.open()
    return context


class _Stop:
    """Queue sentinel; ``flush`` is whether to encode what is buffered."""

    def __init__(self, flush: bool) -> None:
        self.flush = flush


class _Flush:
    """Queue marker: encode everything buffered, then go on with new media."""


class Transcoder:
    """One stream's ladder: a decode thread and a worker thread per rendition.

    ``hardware_encoder`` is the encoder to try first (None for libx264).
    ``source_fps`` is the source's frame rate, or a function that returns it
    (or None) when the first frames are decoded; without one it is measured.
    ``realtime`` False makes ``video`` and ``audio`` wait for room instead of
    rejecting input, for offline runs such as the benchmark.
    """

    def __init__(
        self,
        qualities: Sequence[Quality],
        *,
        audio_bitrate_kbps: int,
        segment_duration: float,
        sink: TranscodeSink,
        hardware_encoder: str | None = None,
        source_fps: Callable[[], float | None] | float | None = None,
        realtime: bool = True,
        log_name: str = "transcoder",
        encoder_opener: Callable[[EncoderSettings], av.CodecContext] | None = None,
    ) -> None:
        self._qualities = list(qualities)
        self.audio_bitrate_kbps = audio_bitrate_kbps
        self._segment_duration = segment_duration
        self._sink = sink
        self._hardware_encoder = hardware_encoder
        self._source_fps = source_fps
        self._realtime = realtime
        self._log_name = log_name
        self._open_encoder = encoder_opener
        # Media items take a slot, so at most INPUT_QUEUE_ITEMS wait. Markers
        # (flush, stop) take none: they are never rejected and never wait.
        self._input: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(INPUT_QUEUE_ITEMS)
        self._workers: dict[str, _RenditionWorker] = {}
        self._workers_lock = threading.Lock()
        self._stopping = threading.Event()
        self.rejected_inputs = 0
        self.decode_errors = 0
        self.planned: list[RenditionPlan] | None = None
        self.latest_input_pts: int | None = None
        self.failure: str | None = None
        self._decoder: _Decoder | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"decode {log_name}", daemon=True
        )
        self._thread.start()

    # Event loop side.

    def video(self, item: VideoInput) -> bool:
        """Queue a source access unit; False when it was rejected (queue full)."""
        self.latest_input_pts = item.pts
        return self._put(item)

    def audio(self, item: AudioInput) -> bool:
        return self._put(item)

    def workers(self) -> list[_RenditionWorker]:
        with self._workers_lock:
            return list(self._workers.values())

    def worker(self, name: str) -> _RenditionWorker | None:
        with self._workers_lock:
            return self._workers.get(name)

    def stop_rendition(self, name: str, reason: str) -> None:
        """Stop encoding one rendition (shedding); the others go on."""
        worker = self.worker(name)
        if worker is not None:
            worker.stop(reason)

    def resume(self, name: str, sequence: int) -> None:
        """Let a rendition whose encoder failed go on at segment ``sequence``."""
        worker = self.worker(name)
        if worker is not None:
            worker.resume_at = sequence

    def flush(self) -> None:
        """Encode all media queued so far, as at the end of a publisher's feed."""
        if not self._stopping.is_set():
            self._input.put_nowait(_Flush())

    def finish(self) -> None:
        """Encode what is queued, then stop; ``join`` waits for the end."""
        self._put_stop(_Stop(flush=True))

    def abort(self) -> None:
        """Stop as soon as possible, dropping what is queued."""
        self._stopping.set()
        for worker in self.workers():
            worker.stop("transcoder stopped")
        self._put_stop(_Stop(flush=False))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every thread to end; False when one is still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        threads = [self._thread, *(worker.thread for worker in self.workers())]
        for thread in threads:
            remaining = (
                None if deadline is None else max(0, deadline - time.monotonic())
            )
            thread.join(remaining)
        return not any(thread.is_alive() for thread in threads)

    def _put(self, item: VideoInput | AudioInput) -> bool:
        if self._stopping.is_set():
            return False
        if self._realtime:
            if not self._slots.acquire(blocking=False):
                self.rejected_inputs += 1
                return False
        else:
            while not self._slots.acquire(timeout=PUT_POLL_SECONDS):
                if not self._thread.is_alive():
                    return False
        self._input.put_nowait(item)
        return True

    def _put_stop(self, stop: _Stop) -> None:
        self._input.put_nowait(stop)

    # Decode thread.

    def _run(self) -> None:
        decoder = self._decoder = _Decoder(self._log_name)
        audio = _AudioEncoder(self.audio_bitrate_kbps, self._sink, self._log_name)
        held: list[_Picture] = []
        flush = False
        try:
            while True:
                item = self._input.get()
                if isinstance(item, VideoInput | AudioInput):
                    self._slots.release()
                if isinstance(item, _Stop):
                    flush = item.flush and not self._stopping.is_set()
                    break
                if self._stopping.is_set():
                    continue
                if isinstance(item, AudioInput):
                    audio.add_safely(item)
                    continue
                if isinstance(item, _Flush):
                    for frame, cut in decoder.flush():
                        self._distribute(frame, cut, held)
                    audio.flush()
                    for worker in self.workers():
                        worker.put_flush()
                    continue
                for frame, cut in decoder.decode(item):
                    self._distribute(frame, cut, held)
            if flush:
                for frame, cut in decoder.flush():
                    self._distribute(frame, cut, held)
                if held and self.planned is None:
                    self._plan(held)
                audio.flush()
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.exception("%s: the decode thread failed", self._log_name)
            flush = False
        finally:
            for worker in self.workers():
                worker.end(flush=flush)
            for worker in self.workers():
                worker.thread.join()
            logger.info(
                "%s: stopped after %d decode errors and %d rejected inputs",
                self._log_name,
                decoder.errors,
                self.rejected_inputs,
            )

    def _distribute(
        self, frame: av.VideoFrame, cut: Cut | None, held: list[_Picture]
    ) -> None:
        # Encoders read pict_type: I forces a keyframe, anything the decoder
        # left there (P, B) would force that type.
        frame.pict_type = PictureType.I if cut is not None else PictureType.NONE
        assert self._decoder is not None
        ratio = self._decoder.sample_aspect_ratio
        width = frame.width if not ratio else max(2, round(frame.width * ratio))
        picture = _Picture(frame, cut, width)
        if self.planned is None:
            held.append(picture)
            if self._hinted_fps() is None and len(held) < FRAME_RATE_SAMPLE:
                return
            self._plan(held)
            return
        for worker in self.workers():
            worker.put(picture)

    def _hinted_fps(self) -> float | None:
        hint = self._source_fps
        return hint() if callable(hint) else hint

    def _plan(self, held: list[_Picture]) -> None:
        first = held[0]
        fps = self._hinted_fps() or _measure_frame_rate([p.frame.pts for p in held])
        renditions, dropped = plan_ladder(
            self._qualities, first.display_width, first.frame.height, fps
        )
        self.planned = renditions
        for reason in dropped:
            logger.info(
                "%s: quality %s dropped: %s", self._log_name, reason.name, reason.reason
            )
        with self._workers_lock:
            for plan in renditions:
                self._workers[plan.name] = _RenditionWorker(
                    plan,
                    sink=self._sink,
                    hardware_encoder=self._hardware_encoder,
                    segment_duration=self._segment_duration,
                    source_fps=fps,
                    log_name=f"{self._log_name}/{plan.name}",
                    encoder_opener=self._open_encoder or open_encoder,
                )
        self._sink.planned(renditions, dropped, fps)
        pictures, held[:] = list(held), []
        for picture in pictures:
            for worker in self.workers():
                worker.put(picture)


@dataclass(frozen=True)
class _Picture:
    """A decoded source frame as the renditions get it.

    ``display_width`` is the width in square pixels: the coded width times
    the sample aspect ratio of an anamorphic source.
    """

    frame: av.VideoFrame
    cut: Cut | None
    display_width: int


class _Decoder:
    """The source's H.264 decoder, reopened when the codec config changes."""

    def __init__(self, log_name: str) -> None:
        self._log_name = log_name
        self._context: av.CodecContext | None = None
        self._config: AvcConfig | None = None
        self._cuts: dict[int, Cut] = {}
        self.errors = 0

    def decode(self, item: VideoInput) -> list[tuple[av.VideoFrame, Cut | None]]:
        frames = []
        if item.config != self._config:
            frames = self.flush()
            self._open(item.config)
        if item.cut is not None:
            self._cuts[item.pts] = item.cut
        packet = av.Packet(item.data)
        packet.pts = item.pts
        packet.dts = item.dts
        packet.time_base = VIDEO_TIMEBASE
        if item.keyframe:
            packet.is_keyframe = True
        return frames + self._decode(packet)

    @property
    def sample_aspect_ratio(self) -> Fraction | None:
        """The pixel aspect ratio the stream signals, None when square or unset."""
        if self._context is None:
            return None
        ratio = self._context.sample_aspect_ratio
        if not ratio or ratio == 1:
            return None
        return Fraction(ratio)

    def flush(self) -> list[tuple[av.VideoFrame, Cut | None]]:
        """Return the frames the decoder holds; the next packet reopens it."""
        if self._context is None:
            return []
        frames = self._decode(None)
        self._context = None
        self._config = None
        return frames

    def _open(self, config: AvcConfig) -> None:
        context = av.CodecContext.create("h264", "r")
        context.extradata = config.record
        context.thread_type = "FRAME"
        context.open()
        self._context = context
        self._config = config

    def _decode(
        self, packet: av.Packet | None
    ) -> list[tuple[av.VideoFrame, Cut | None]]:
        assert self._context is not None
        try:
            frames = self._context.decode(packet)
        except av.FFmpegError as exc:
            self.errors += 1
            if self.errors % 100 == 1:
                logger.warning(
                    "%s: %d undecodable video packets so far: %s",
                    self._log_name,
                    self.errors,
                    exc,
                )
            return []
        result = []
        for frame in frames:
            if frame.pts is None:
                continue
            frame.time_base = VIDEO_TIMEBASE
            result.append((frame, self._cuts.pop(frame.pts, None)))
            # A cut whose frame never came out (undecodable) is forgotten.
            for stale in [pts for pts in self._cuts if pts < frame.pts]:
                del self._cuts[stale]
        return result


class _AudioEncoder:
    """Decodes the source AAC and encodes it once at the profile's bit rate."""

    def __init__(self, bitrate_kbps: int, sink: TranscodeSink, log_name: str) -> None:
        self._bitrate = bitrate_kbps
        self._sink = sink
        self._log_name = log_name
        self._config: AacConfig | None = None
        self._decoder: av.CodecContext | None = None
        self._encoder: av.CodecContext | None = None
        self._resampler: AudioResampler | None = None
        self._output_config: AacConfig | None = None
        self._errors = 0

    def add_safely(self, item: AudioInput) -> None:
        """Add a frame; a failure is logged and costs that frame, not the ladder."""
        try:
            self.add(item)
        except Exception as exc:
            self._errors += 1
            self._encoder = None
            if self._errors % 100 == 1:
                logger.exception(
                    "%s: failed to re-encode audio (%d failures so far): %s",
                    self._log_name,
                    self._errors,
                    exc,
                )

    def add(self, item: AudioInput) -> None:
        if item.config != self._config:
            self.flush()
            decoder = av.CodecContext.create("aac", "r")
            decoder.extradata = item.config.config
            decoder.open()
            self._decoder = decoder
            self._config = item.config
        assert self._decoder is not None
        packet = av.Packet(item.data)
        packet.pts = packet.dts = item.dts
        packet.time_base = Fraction(1, item.config.sample_rate)
        try:
            frames = self._decoder.decode(packet)
        except av.FFmpegError as exc:
            self._errors += 1
            if self._errors % 100 == 1:
                logger.warning("%s: undecodable audio frame: %s", self._log_name, exc)
            return
        for frame in frames:
            self._encode(frame)

    def flush(self) -> None:
        """Encode what the encoder holds; the next frame opens a new one."""
        if self._encoder is not None:
            self._emit(self._encoder.encode(None))
        self._encoder = None
        self._resampler = None

    def _encode(self, frame: av.AudioFrame) -> None:
        encoder = self._encoder
        if encoder is None or frame.sample_rate != encoder.sample_rate:
            self.flush()
            encoder = self._open(frame, frame.layout.name)
        assert self._resampler is not None
        for chunk in self._resampler.resample(frame):
            self._emit(encoder.encode(chunk))

    def _open(self, frame: av.AudioFrame, layout: str) -> av.CodecContext:
        """Open the AAC encoder for ``frame``'s rate; a layout it rejects is
        downmixed to stereo."""
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate = frame.sample_rate
        encoder.layout = layout
        encoder.format = "fltp"
        encoder.bit_rate = self._bitrate * 1000
        encoder.time_base = Fraction(1, frame.sample_rate)
        encoder.flags |= av.codec.context.Flags.global_header
        try:
            encoder.open()
        except av.FFmpegError as exc:
            if layout == STEREO:
                raise
            logger.warning(
                "%s: the AAC encoder rejected the %s channel layout (%s); "
                "downmixing to stereo",
                self._log_name,
                layout,
                exc,
            )
            return self._open(frame, STEREO)
        self._encoder = encoder
        self._output_config = parse_aac_config(bytes(encoder.extradata))
        self._resampler = AudioResampler(
            format="fltp", layout=layout, rate=frame.sample_rate,
            frame_size=encoder.frame_size,
        )  # fmt: skip
        return encoder

    def _emit(self, packets: Sequence[av.Packet]) -> None:
        config = self._output_config
        assert config is not None
        for packet in packets:
            # The encoder's priming frame comes before the first input sample.
            if packet.pts is None or packet.pts < 0:
                continue
            self._sink.audio(EncodedAudio(config, packet.pts, bytes(packet)))


class _RenditionWorker:
    """Scales and encodes one rendition in its own thread.

    Reads of the counters from other threads see recent, not exact, values.
    """

    def __init__(
        self,
        plan: RenditionPlan,
        *,
        sink: TranscodeSink,
        hardware_encoder: str | None,
        segment_duration: float,
        source_fps: float,
        log_name: str,
        encoder_opener: Callable[[EncoderSettings], av.CodecContext],
    ) -> None:
        self.plan = plan
        self.name = plan.name
        self.encoder_name = hardware_encoder or SOFTWARE_ENCODER
        self.width = plan.width
        self.height = plan.height
        self.fps = plan.fps
        self.state = "running"  # running, waiting (after a failure), stopped
        self.stop_reason: str | None = None
        self.resume_at: int | None = None
        self.frames_encoded = 0
        self.last_pts: int | None = None
        # The newest source frame this worker has taken, kept or not.
        self.consumed_pts: int | None = None
        self._sink = sink
        self._segment_duration = segment_duration
        self._source_interval = 90000 / source_fps
        self._log_name = log_name
        self._open = encoder_opener
        self._queue: queue.Queue = queue.Queue(maxsize=RENDITION_QUEUE_FRAMES)
        self._scaler = VideoReformatter()
        self._encoder: av.CodecContext | None = None
        self._encoder_size: tuple[int, int] | None = None
        self._config: AvcConfig | None = None
        self._cuts: dict[int, Cut] = {}
        self._next_due: float | None = None
        self._emitted = False
        self._software_failures = 0
        self._progress: list[tuple[float, int]] = []  # (wall time, pts)
        self.thread = threading.Thread(target=self._run, name=log_name, daemon=True)
        self.thread.start()

    @property
    def speed(self) -> float | None:
        """Media seconds encoded per wall second over the last few seconds."""
        progress = list(self._progress)
        if len(progress) < 2:
            return None
        (wall0, pts0), (wall1, pts1) = progress[0], progress[-1]
        if wall1 <= wall0:
            return None
        return (pts1 - pts0) / 90000 / (wall1 - wall0)

    def put(self, picture: _Picture) -> None:
        if self.state != "stopped":
            _put_until(self._queue, picture, lambda: self.state != "stopped")

    def put_flush(self) -> None:
        if self.state != "stopped":
            _put_until(self._queue, _Flush(), lambda: self.state != "stopped")

    def stop(self, reason: str) -> None:
        if self.state == "stopped":
            return
        self.stop_reason = reason
        self.state = "stopped"
        _clear(self._queue)
        try:
            self._queue.put_nowait(_Stop(flush=False))
        except queue.Full:
            pass  # the thread checks the state at its next frame

    def end(self, *, flush: bool) -> None:
        if self.state != "stopped":
            _put_until(self._queue, _Stop(flush=flush), self.thread.is_alive)

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _Stop):
                    if item.flush and self._encoder is not None:
                        self._emit(self._encoder.encode(None))
                    return
                if self.state == "stopped":
                    return
                if isinstance(item, _Flush):
                    self._flush()
                    continue
                self._frame(item)
        except Exception as exc:
            logger.exception("%s: rendition failed", self._log_name)
            self._stopped(f"{type(exc).__name__}: {exc}")

    def _frame(self, picture: _Picture) -> None:
        frame, cut = picture.frame, picture.cut
        self.consumed_pts = frame.pts
        if self.state == "waiting":
            if cut is None or self.resume_at is None or cut.sequence < self.resume_at:
                return
            self.state = "running"
            logger.info(
                "%s: resumed on %s at segment %d",
                self._log_name,
                self.encoder_name,
                cut.sequence,
            )
        if not self._keep(frame.pts, cut):
            return
        size = fit_size(
            self.plan.quality.width,
            self.plan.quality.height,
            picture.display_width,
            frame.height,
        )
        if size != self._encoder_size:
            if cut is None and self._encoder is not None:
                return  # a new size starts at a segment boundary
            self._reopen(size)
            if self._encoder is None:
                return
        scaled = self._scaler.reformat(
            frame,
            size[0],
            size[1],
            PIXEL_FORMATS.get(self.encoder_name, "yuv420p"),
            interpolation=Interpolation.BICUBIC,
        )
        if scaled is not frame:
            scaled.pts = frame.pts
            scaled.time_base = VIDEO_TIMEBASE
            scaled.pict_type = frame.pict_type
        if cut is not None:
            self._cuts[frame.pts] = cut
        assert self._encoder is not None
        try:
            packets = self._encoder.encode(scaled)
        except Exception as exc:
            self._encoder_failed(exc)
            return
        self._emit(packets)

    def _flush(self) -> None:
        """Drain the encoder; the next frame (a cut) opens a new one."""
        if self._encoder is not None:
            try:
                self._emit(self._encoder.encode(None))
            except Exception as exc:
                logger.warning(
                    "%s: flushing the encoder failed: %s", self._log_name, exc
                )
        self._encoder = None
        self._encoder_size = None
        self._cuts.clear()
        self._sink.segment_end(self.name)

    def _keep(self, pts: int, cut: Cut | None) -> bool:
        """Frame-rate reduction: keep one frame per 1/fps slot, and every cut.

        A frame fills the next slot when it is within half a source frame of
        it, which absorbs the millisecond rounding of RTMP times.
        """
        # NOTE: a cut that falls between two slots is kept anyway, so the
        # two frames around a segment start can be closer than 1/fps.
        interval = 90000 / self.fps
        due = self._next_due
        if cut is None and due is not None and pts < due - self._source_interval / 2:
            return False
        if cut is not None or due is None or pts - due > interval:
            due = pts  # start the slots again: a segment start or a gap
        self._next_due = due + interval
        return True

    def _reopen(self, size: tuple[int, int]) -> None:
        if self._encoder is not None:
            try:
                self._emit(self._encoder.encode(None))
            except Exception as exc:
                logger.warning(
                    "%s: flushing the encoder failed: %s", self._log_name, exc
                )
        self._encoder = None
        self._encoder_size = None
        try:
            self._encoder = self._open(self._settings(size))
        except Exception as exc:
            if self.encoder_name == SOFTWARE_ENCODER:
                raise
            logger.warning(
                "%s: %s failed to open (%s); using %s",
                self._log_name,
                self.encoder_name,
                exc,
                SOFTWARE_ENCODER,
            )
            if self._emitted:
                self._encoder_failed(exc)
                return
            self.encoder_name = SOFTWARE_ENCODER
            self._encoder = self._open(self._settings(size))
        self._encoder_size = size
        self.width, self.height = size
        self._config = avc_config_from_annexb(bytes(self._encoder.extradata or b""))

    def _settings(self, size: tuple[int, int]) -> EncoderSettings:
        # Keyframes come from the cuts; the encoder's own interval is a
        # safety net for a source whose segments run long.
        interval = max(1, round(2 * self.fps * self._segment_duration))
        return EncoderSettings(
            name=self.encoder_name,
            width=size[0],
            height=size[1],
            fps=self.fps,
            bitrate_kbps=self.plan.quality.bitrate,
            keyframe_interval=interval,
        )

    def _encoder_failed(self, exc: Exception) -> None:
        failed = self.encoder_name
        message = f"{type(exc).__name__}: {exc}"
        self._encoder = None
        self._encoder_size = None
        self._cuts.clear()
        if failed == SOFTWARE_ENCODER:
            self._software_failures += 1
            logger.warning("%s: %s failed: %s", self._log_name, failed, message)
            if self._software_failures >= MAX_SOFTWARE_FAILURES:
                self._stopped(
                    f"{failed} failed {self._software_failures} times: {message}"
                )
                return
        else:
            logger.warning(
                "%s: %s failed mid-stream (%s); restarting on %s",
                self._log_name,
                failed,
                message,
                SOFTWARE_ENCODER,
            )
        self.encoder_name = SOFTWARE_ENCODER
        self.state = "waiting"
        self.resume_at = None
        self._sink.encoder_failed(self.name, failed, message)

    def _emit(self, packets: Sequence[av.Packet]) -> None:
        config = self._config
        assert config is not None
        for packet in packets:
            pts = packet.pts
            cut = self._cuts.pop(pts, None)
            self._sink.video(
                EncodedVideo(
                    self.name,
                    config,
                    pts,
                    annexb_to_length_prefixed(bytes(packet)),
                    packet.is_keyframe,
                    cut,
                )
            )
            self._emitted = True
            self._software_failures = 0 if cut is not None else self._software_failures
            self.frames_encoded += 1
            self.last_pts = pts
            self._record_progress(pts)

    def _record_progress(self, pts: int) -> None:
        now = time.monotonic()
        progress = self._progress
        progress.append((now, pts))
        while len(progress) > 2 and now - progress[0][0] > SPEED_WINDOW_SECONDS:
            progress.pop(0)

    def _stopped(self, reason: str) -> None:
        self.state = "stopped"
        self.stop_reason = reason
        self._sink.rendition_stopped(self.name, reason)


def _measure_frame_rate(pts_values: Sequence[int]) -> float:
    """Return the frame rate that presentation times show, or 30 if they show none.

    RTMP times are whole milliseconds, so the measured rate is snapped to a
    common rate within 2%.
    """
    ordered = sorted(set(pts_values))
    steps = [b - a for a, b in itertools.pairwise(ordered)]
    if not steps:
        return 30.0
    # A step well above the median is a missing frame, not the frame rate.
    typical = statistics.median(steps)
    regular = [step for step in steps if step <= 1.5 * typical]
    rate = 90000 * len(regular) / sum(regular)
    nearest = min(COMMON_FRAME_RATES, key=lambda common: abs(common - rate))
    if abs(nearest - rate) <= 0.02 * nearest:
        return nearest
    return round(rate, 3)


def _put_until(target: queue.Queue, item: object, alive: Callable[[], bool]) -> None:
    """Put ``item``, waiting for room as long as ``alive()`` holds."""
    while True:
        try:
            target.put(item, timeout=PUT_POLL_SECONDS)
            return
        except queue.Full:
            if not alive():
                return


def _clear(target: queue.Queue) -> None:
    while True:
        try:
            target.get_nowait()
        except queue.Empty:
            return
