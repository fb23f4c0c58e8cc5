"""Passthrough HLS packager: FLV H.264 and AAC in, fMP4 segments and playlists out.

Nothing is decoded. Each FLV frame becomes one fMP4 sample. The open segment
is cut at the first video keyframe once it is close to the target duration.
Audio-only streams, and others while their video has stopped, are cut by the
audio's duration. A sample is held until the next one of its track arrives,
because that arrival gives its duration.

Layout of the output directory::

    index.m3u8                  multivariant playlist
    <rendition>/index.m3u8      media playlist (sliding window)
    <rendition>/init-N.mp4      init segment, a new N after a config change
    <rendition>/seg-N.m4s       media segment N (N is the media sequence number)

Timing: RTMP timestamps are 32-bit milliseconds that wrap at 2**32 and, from
some encoders, jump. They are unwrapped per track and shifted so that the
first sample is at 0. Video runs at 90 kHz and never repeats a DTS. Audio
runs at its sample rate and advances 1024 samples per AAC frame, so the
millisecond rounding of RTMP does not show up as jitter.

One segmenter serves a whole publishing session, which may span several
publisher connections. ``discontinuity()`` ends one publisher's media; the
next publisher's timestamps are then shifted to continue after the last
written sample, behind an EXT-X-DISCONTINUITY tag.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from realcast_box.hls import fmp4
from realcast_box.hls.output import (
    PART_TARGET_HEADROOM,
    Multivariant,
    RenditionFiles,
    VariantSource,
    is_gap,
)
from realcast_box.hls.timeline import (
    DEFAULT_FRAME_MS,
    PendingSample,
    TrackBuffer,
    TrackClock,
)
from realcast_box.media.codecs import (
    AacConfig,
    AvcConfig,
    parse_aac_config,
    parse_avc_config,
)
from realcast_box.media.flv import AudioTag, InvalidTag, VideoTag
from realcast_box.media.ladder import Cut

logger = logging.getLogger(__name__)

VIDEO_TIMESCALE = 90000
AAC_FRAME_SAMPLES = 1024
VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2

# Video segments are cut at the first keyframe at or after this fraction of
# the target duration, so a GOP slightly shorter than the target (or
# millisecond rounding) does not double the segment length.
CUT_FRACTION = 0.9
# Without a keyframe for this long, a video segment is cut anyway, so that an
# encoder that never sends keyframes cannot grow one segment without limit.
# The segment after such a cut does not start with a keyframe.
MAX_SEGMENT_SECONDS = 60
# A segment is also cut once it contains this much media, because timestamps
# come from the publisher and cannot bound the memory of the open segment.
# 64 MiB is about 17 s at 30 Mbit/s.
MAX_SEGMENT_BYTES = 64 * 1024 * 1024
# Start audio-only when this much audio arrived and no video config did.
AUDIO_ONLY_AFTER_MS = 1000
# Wait this long for a missing audio config that the metadata announced.
AUDIO_CONFIG_WAIT_MS = 1000
# Audio kept while no segment can take it, at most (about 10 s at 48 kHz).
AUDIO_BACKLOG_FRAMES = 500
# AAC's decoder input buffer is 6144 bits per channel (ISO/IEC 14496-3), so
# a frame of 48 channels fits in 36 KiB. Larger tags are not AAC frames, and
# rejecting them bounds the backlog above to about 18 MiB.
MAX_AAC_FRAME_BYTES = 48 * 6144 // 8
# Audio follows its sample count until RTMP time differs by more than this.
AUDIO_DRIFT_FRAMES = 3

# Audio this many target durations ahead of the last video frame means that
# the video stopped while the audio goes on (Segmenter._stall_video).
VIDEO_STALL_TARGETS = 1.0
# The least lead for a stall, in seconds. Encoders interleave the two tracks
# far closer than this.
MIN_VIDEO_STALL_SECONDS = 2.0

# A feed that stays slower than the part target has a gap at every frame,
# so after the first gap warning the next waits this long and counts them.
GAP_WARNING_SECONDS = 60.0
# Times of recent gaps kept at most. Gaps are longer than a part target
# (0.1 s at the least), so a minute has fewer than this.
MAX_GAPS_KEPT = 1000

_RENDITION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class _StreamHints:
    """Stream properties announced by onMetaData; sequence headers override them."""

    has_video: bool | None = None
    has_audio: bool | None = None
    bitrate: int | None = None  # bits per second
    frame_rate: float | None = None


class SegmenterTap(Protocol):
    """Sees every sample the segmenter packages, on the output timeline.

    The transcoding ladder reads its input here, so that renditions share
    the source's timeline, segment boundaries and sequence numbers. A
    recorder uses ``segment_written`` to copy each segment just written.
    """

    def video_sample(
        self, config: AvcConfig, sample: PendingSample, cut: Cut | None
    ) -> None:
        """Take a video sample at 90 kHz; ``cut`` is set when it starts a segment."""

    def audio_sample(self, config: AacConfig, sample: PendingSample) -> None:
        """Take an AAC frame; its DTS counts samples at the config's sample rate."""

    def segment_written(
        self, sequence: int, duration: float, discontinuity: bool
    ) -> None: ...

    def media_ended(self) -> None:
        """Note the end of the publisher's media (``discontinuity``)."""


class Segmenter:
    """Passthrough HLS packager for one publisher's H.264 and AAC.

    Synchronous and cheap per call, so it runs on the event loop. The files
    are written by ``RenditionFiles``, and ``OSError`` from the file system
    propagates to the caller.
    """

    def __init__(
        self,
        directory: Path,
        *,
        target_duration: float = 2.0,
        window: int = 6,
        rendition: str = "source",
        first_sequence: int = 0,
        multivariant: Multivariant | None = None,
        part_duration: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not target_duration > 0:
            raise ValueError(
                f"invalid target_duration {target_duration!r}: expected seconds > 0"
            )
        if window < 1:
            raise ValueError(f"invalid window {window!r}: expected at least 1")
        if not _RENDITION_PATTERN.match(rendition):
            raise ValueError(
                f"invalid rendition name {rendition!r}: expected 1 to 64 letters, "
                "digits, '-' or '_'"
            )
        if first_sequence < 0:
            raise ValueError(
                f"invalid first_sequence {first_sequence!r}: expected an integer >= 0"
            )
        directory = Path(directory)
        self._log_name = f"{directory.name}/{rendition}"
        self._target = target_duration
        self._files = RenditionFiles(
            directory,
            rendition,
            target_duration=target_duration,
            window=window,
            first_sequence=first_sequence,
            log_name=self._log_name,
            multivariant=multivariant,
            part_duration=part_duration,
        )
        # Listeners of the packaged media: the transcoding ladder, recorders.
        self._taps: list[SegmenterTap] = []
        # Whether the next video sample starts a segment, for the tap.
        self._segment_opened = False
        # Sequence numbers that get EXT-X-DISCONTINUITY when they are written.
        self._forced_discontinuities: set[int] = set()

        self._video_config: AvcConfig | None = None
        self._audio_config: AacConfig | None = None
        self._hints = _StreamHints()
        self._video_clock, self._audio_clock = _track_clocks(self._log_name)
        # When the recent gaps in the video happened, when _warn_gap last
        # logged one, and how many came since.
        self._clock = clock
        self._gap_times: deque[float] = deque(maxlen=MAX_GAPS_KEPT)
        self._gap_warned_at: float | None = None
        self._gaps_since_warning = 0
        self._first_video_ms: int | None = None
        self._audio_backlog: deque[tuple[int, bytes]] = deque(
            maxlen=AUDIO_BACKLOG_FRAMES
        )

        # Output state. _started is False before the first segment and, after
        # discontinuity(), until the next publisher's first keyframe.
        self._started = False
        self._finished = False
        self._origin_ms = 0
        self._wall_origin = 0.0
        # Where the next publisher's media starts, in ms of the output timeline.
        self._resume_ms = 0
        self._active_video: AvcConfig | None = None
        self._active_audio: AacConfig | None = None
        self._video: TrackBuffer | None = None
        self._audio: TrackBuffer | None = None
        self._discontinuity_pending = False
        # Duration given to the frame before the last gap, for the next Cut.
        self._gap_frame_ticks: int | None = None
        self._dropped_audio_frames = 0
        # Where the audio has run without a gap since, in seconds of the
        # output timeline. A whole-feed stall leaves a gap in the audio too.
        self._audio_run_start: float | None = None
        # Whether a cut at the target duration without a keyframe was logged.
        self._long_gop_logged = False
        # Whether the video stopped while the audio goes on, so that audio
        # times parts and segments until the next video frame.
        self._video_stalled = False
        # Frames after a stall that came too late to follow the audio
        # already written (_resume_video).
        self._late_frames = 0
        # Seconds added to the stall threshold after video came back late:
        # the publisher's video lags its audio rather than stopping.
        self._video_lag = 0.0

    # Public state.

    @property
    def segment_count(self) -> int:
        """Number of media segments written so far."""
        return self._files.segment_count

    @property
    def next_sequence(self) -> int:
        """Media sequence number of the next segment to be written."""
        return self._files.next_sequence

    @property
    def ready(self) -> bool:
        """Whether the first segment and both playlists are on disk."""
        return self._files.ready

    @property
    def video_config(self) -> AvcConfig | None:
        """The latest H.264 sequence header received."""
        return self._video_config

    @property
    def audio_config(self) -> AacConfig | None:
        """The latest AAC sequence header received."""
        return self._audio_config

    @property
    def frame_rate_hint(self) -> float | None:
        """The frame rate that onMetaData announced, if any."""
        return self._hints.frame_rate

    @property
    def files(self) -> RenditionFiles:
        return self._files

    def wall_time(self, seconds: float) -> datetime:
        """Return the EXT-X-PROGRAM-DATE-TIME of ``seconds`` on the output timeline."""
        return datetime.fromtimestamp(self._wall_origin + seconds, UTC)

    def add_tap(self, tap: SegmenterTap) -> None:
        """Pass every later sample and segment to ``tap`` too."""
        self._taps.append(tap)

    def remove_tap(self, tap: SegmenterTap) -> None:
        """Stop passing media to ``tap``; harmless when it was not added."""
        if tap in self._taps:
            self._taps.remove(tap)

    def request_discontinuity(self, sequence: int) -> None:
        """Mark segment ``sequence``, not yet started, with EXT-X-DISCONTINUITY."""
        self._forced_discontinuities.add(sequence)

    # Input.

    def set_metadata(self, metadata: dict) -> None:
        """Take hints from onMetaData: hasVideo, hasAudio, data rates, frame rate."""
        hints = self._hints
        for key, attribute in (("hasVideo", "has_video"), ("hasAudio", "has_audio")):
            if isinstance(metadata.get(key), bool):
                setattr(hints, attribute, metadata[key])
        if hints.has_video is None and "videocodecid" in metadata:
            hints.has_video = True
        if hints.has_audio is None and "audiocodecid" in metadata:
            hints.has_audio = True
        video_rate, audio_rate = (
            _positive_number(metadata.get(key)) for key in _DATA_RATE_KEYS
        )
        # An encoder in a quality mode (x264's CRF, ffmpeg's default) announces
        # videodatarate 0. An audio rate alone would then put BANDWIDTH far
        # too low until the first segment, so it counts alone only when
        # onMetaData announces no video.
        if video_rate is not None or (
            audio_rate is not None and hints.has_video is not True
        ):
            hints.bitrate = int(((video_rate or 0) + (audio_rate or 0)) * 1000)
        frame_rate = _positive_number(metadata.get("framerate"))
        if frame_rate is not None and frame_rate <= 1000:
            hints.frame_rate = frame_rate

    def add_video(self, timestamp_ms: int, tag: VideoTag) -> None:
        """Add one H.264 tag; raises ``InvalidTag`` for a malformed avcC record."""
        self._check_open()
        if tag.is_sequence_header:
            self._set_video_config(parse_avc_config(tag.data))
            return
        if not tag.data or self._video_config is None:
            return

        time_ms = self._video_clock.extend(timestamp_ms)
        if self._first_video_ms is None:
            self._first_video_ms = time_ms
        if not self._started:
            if tag.keyframe and not self._waiting_for_audio_config(time_ms):
                self._start(time_ms, tag)
            return

        # The configs are usually the objects that the init was opened with, so
        # an identity test skips the field comparison on almost every frame.
        video_changed = (
            self._active_video is not self._video_config
            and self._active_video != self._video_config
        )
        audio_changed = (
            self._active_audio is not self._audio_config
            and self._active_audio != self._audio_config
        )
        if video_changed or audio_changed:
            if tag.keyframe:
                self._restart_at_keyframe(time_ms, tag)
                return
            if video_changed:
                return  # undecodable without the keyframe of the new config
        self._add_video_sample(time_ms, tag)

    def add_audio(self, timestamp_ms: int, tag: AudioTag) -> None:
        """Add one AAC tag; raises ``InvalidTag`` for a malformed config."""
        self._check_open()
        if tag.is_sequence_header:
            self._set_audio_config(parse_aac_config(tag.data))
            return
        if not tag.data or self._audio_config is None:
            return
        if len(tag.data) > MAX_AAC_FRAME_BYTES:
            raise InvalidTag(
                f"AAC frame of {len(tag.data)} bytes is larger than the maximum "
                f"of {MAX_AAC_FRAME_BYTES} bytes"
            )

        time_ms = self._audio_clock.extend(timestamp_ms)
        if not self._started:
            self._audio_backlog.append((time_ms, tag.data))
            if self._video_config is None and self._audio_only_due(time_ms):
                self._start_audio_only()
            return

        if (
            self._active_audio is not self._audio_config
            and self._active_audio != self._audio_config
        ):
            if self._video_config is not None:
                # Held until the video keyframe that starts the new init.
                self._audio_backlog.append((time_ms, tag.data))
                return
            self._restart_audio_only()
        self._add_audio_sample(time_ms, tag.data)

    def discontinuity(self) -> None:
        """End the current publisher's media so that another publisher can go on.

        Writes the open segment. Media added afterwards needs its own sequence
        headers and starts at a keyframe. Its timestamps are shifted to go on
        right after the last written sample, and its first segment gets
        EXT-X-DISCONTINUITY. The init segment is reused when the new codec
        configs equal the old ones.
        """
        self._check_open()
        if self._started:
            for buffer in self._buffers():
                buffer.flush_pending()
            self._close_segment()
            self._resume_ms = self._timeline_end_ms()
            if self._audio is not None:
                # The next publisher's audio starts where its video starts.
                self._audio.next_audio_dts = math.ceil(
                    self._resume_ms * self._audio.track.timescale / 1000
                )
                self._audio_run_start = self._resume_ms / 1000
        if self._files.init_count:
            self._discontinuity_pending = True
        for tap in list(self._taps):
            tap.media_ended()
        self._started = False
        self._video_stalled = False
        self._video_config = None
        self._audio_config = None
        self._hints = _StreamHints()
        self._video_clock, self._audio_clock = _track_clocks(self._log_name)
        self._first_video_ms = None
        self._audio_backlog.clear()
        logger.info(
            "%s: publisher media ended at %.3f s; later media continues from there",
            self._log_name,
            self._resume_ms / 1000,
        )

    def finish(self) -> None:
        """Write the last segment and end the media playlist with EXT-X-ENDLIST.

        Safe to call twice. Nothing is written when no segment ever started.
        """
        if self._finished:
            return
        if not self._started and self._audio_backlog and self._video_config is None:
            self._start_audio_only()
        self._finished = True
        if not self._files.init_count:
            logger.info("%s: finished before any segment", self._log_name)
            return
        for buffer in self._buffers():
            buffer.flush_pending()
        if not self._close_segment(ended=True):
            self._files.end()
        logger.info(
            "%s: finished after %d segments", self._log_name, self.segment_count
        )

    # Configs.

    def _set_video_config(self, config: AvcConfig) -> None:
        if config == self._video_config:
            return  # encoders such as OBS resend the same header
        self._video_config = config
        logger.debug(
            "%s: video config %s %dx%d",
            self._log_name,
            config.codec_string,
            config.width,
            config.height,
        )

    def _set_audio_config(self, config: AacConfig) -> None:
        if config == self._audio_config:
            return
        self._audio_config = config
        self._audio_backlog.clear()  # frames of the previous config
        logger.debug(
            "%s: audio config %s %d Hz",
            self._log_name,
            config.codec_string,
            config.sample_rate,
        )

    def _waiting_for_audio_config(self, time_ms: int) -> bool:
        if self._audio_config is not None or not self._hints.has_audio:
            return False
        assert self._first_video_ms is not None
        return time_ms - self._first_video_ms < AUDIO_CONFIG_WAIT_MS

    def _audio_only_due(self, time_ms: int) -> bool:
        if self._hints.has_video is False:
            return True
        return time_ms - self._audio_backlog[0][0] >= AUDIO_ONLY_AFTER_MS

    # Starting, cutting and restarting.

    def _start(self, time_ms: int, tag: VideoTag) -> None:
        self._begin(time_ms)
        self._use_init(self._video_config, self._audio_config)
        self._add_video_sample(time_ms, tag)
        self._drain_audio_backlog(since_ms=time_ms)

    def _start_audio_only(self) -> None:
        first_ms = self._audio_backlog[0][0]
        self._begin(first_ms)
        self._wall_origin -= (self._audio_backlog[-1][0] - first_ms) / 1000
        self._use_init(None, self._audio_config)
        self._drain_audio_backlog(since_ms=first_ms)

    def _begin(self, first_ms: int) -> None:
        """Map publisher time ``first_ms`` to the end of the output so far."""
        self._started = True
        self._segment_opened = True
        self._video_stalled = False
        self._origin_ms = first_ms - self._resume_ms
        self._wall_origin = time.time() - self._resume_ms / 1000

    def _use_init(self, video: AvcConfig | None, audio: AacConfig | None) -> None:
        """Open a new init segment unless the current one has these configs."""
        if self._files.init_count and (video, audio) == (
            self._active_video,
            self._active_audio,
        ):
            logger.info(
                "%s: media resumed with the same codec config, keeping %s",
                self._log_name,
                self._files.current_init,
            )
            # Equal configs: keep the new objects so that add_video's
            # identity test matches again.
            self._active_video = video
            self._active_audio = audio
            return
        self._open_init(video, audio)

    def _timeline_end_ms(self) -> int:
        """Return the end of the written samples, in ms of the output timeline."""
        end_ms = self._resume_ms
        for buffer in self._buffers():
            if buffer.last_dts is None:
                continue
            end = buffer.last_dts + buffer.last_duration
            if buffer.next_audio_dts is not None:
                end = max(end, buffer.next_audio_dts)
            end_ms = max(end_ms, math.ceil(end * 1000 / buffer.track.timescale))
        return end_ms

    def _restart_at_keyframe(self, time_ms: int, tag: VideoTag) -> None:
        """Close the open segment and start a new init with ``tag`` first."""
        self._video_stalled = False
        keyframe = None
        if self._video is not None:
            # Pushing the keyframe gives the frame before it its duration.
            keyframe = self._video_sample(self._video, time_ms, tag)
            self._write_part_if_due(self._video, next_dts=keyframe.dts)
            self._video.push(keyframe)
        if self._audio is not None:
            self._audio.flush_pending()
        self._close_segment()

        self._open_init(self._video_config, self._audio_config)
        assert self._video is not None
        if keyframe is None:
            keyframe = self._video_sample(self._video, time_ms, tag)
            self._video.push(keyframe)
        self._segment_opened = True
        self._tap_video(keyframe)
        self._drain_audio_backlog(since_ms=time_ms)

    def _restart_audio_only(self) -> None:
        assert self._audio is not None
        self._audio.flush_pending()
        self._close_segment()
        self._open_init(None, self._audio_config)

    def _cut(self) -> None:
        """Close the open segment but keep the pending sample of the cutting track."""
        if self._video_drives and self._audio is not None:
            self._audio.flush_pending()
        self._close_segment()
        self._segment_opened = True

    def _open_init(self, video: AvcConfig | None, audio: AacConfig | None) -> None:
        tracks = []
        if video is not None:
            tracks.append(fmp4.Track(VIDEO_TRACK_ID, VIDEO_TIMESCALE, video))
        if audio is not None:
            tracks.append(fmp4.Track(AUDIO_TRACK_ID, audio.sample_rate, audio))
        name = self._files.write_init(tracks)

        description = _describe(video, audio)
        if self._files.init_count == 1:
            logger.info("%s: rendition started: %s", self._log_name, description)
        else:
            self._discontinuity_pending = True
            logger.info(
                "%s: codec config changed, discontinuity with %s: %s",
                self._log_name,
                name,
                description,
            )
        self._active_video = video
        self._active_audio = audio
        self._video = self._track_buffer(self._video, tracks, VIDEO_TRACK_ID)
        self._audio = self._track_buffer(self._audio, tracks, AUDIO_TRACK_ID)

    def _track_buffer(
        self, buffer: TrackBuffer | None, tracks: list[fmp4.Track], track_id: int
    ) -> TrackBuffer | None:
        track = next((t for t in tracks if t.track_id == track_id), None)
        if track is None:
            return None
        if buffer is None:
            return TrackBuffer(track, self._default_duration(track))
        old_timescale = buffer.track.timescale
        buffer.track = track
        if track.timescale != old_timescale:
            # A new AAC sample rate: carry the timeline over to the new scale.
            buffer.last_dts = _rescale(buffer.last_dts, old_timescale, track.timescale)
            buffer.next_audio_dts = _rescale(
                buffer.next_audio_dts, old_timescale, track.timescale
            )
            buffer.last_duration = self._default_duration(track)
        return buffer

    def _default_duration(self, track: fmp4.Track) -> int:
        if not track.is_video:
            return AAC_FRAME_SAMPLES
        frame_rate = self._hints.frame_rate
        if frame_rate is None:
            return DEFAULT_FRAME_MS * VIDEO_TIMESCALE // 1000
        return max(1, round(VIDEO_TIMESCALE / frame_rate))

    # Samples.

    @property
    def _video_drives(self) -> bool:
        """Whether video frames time parts and cut segments, rather than audio."""
        return self._video is not None and not self._video_stalled

    def _add_video_sample(self, time_ms: int, tag: VideoTag) -> None:
        buffer = self._video
        assert buffer is not None
        if self._video_stalled:
            self._resume_video(buffer, time_ms, tag)
            return
        sample = self._video_sample(buffer, time_ms, tag)
        if self._long_frame(buffer, sample):
            self._close_at_gap(buffer, sample)
            return
        start = buffer.segment_start
        elapsed = (sample.dts - start) / VIDEO_TIMESCALE if start is not None else 0
        due = tag.keyframe and elapsed >= CUT_FRACTION * self._target
        if not tag.keyframe and elapsed >= MAX_SEGMENT_SECONDS:
            logger.warning(
                "%s: no keyframe for %.0f s; cutting the segment at a frame that "
                "is not a keyframe",
                self._log_name,
                elapsed,
            )
            due = True
        elif not tag.keyframe and self._cut_at_target(elapsed):
            due = True
        self._write_part_if_due(buffer, next_dts=sample.dts)
        buffer.push(sample)
        if due or self._segment_full():
            self._cut()
        else:
            self._write_part_if_due(buffer)
        self._tap_video(sample)

    def _long_frame(self, buffer: TrackBuffer, sample: PendingSample) -> bool:
        """Return whether the pending frame is a gap in the video (output.is_gap).

        Low-latency HLS only. Before the first part, frames near or above
        the part target widen it instead (RenditionFiles.widen_part_target),
        unless onMetaData announced a frame rate that makes them a stall.
        NOTE: a feed that slows below about 3 fps after its first part gets
        a discontinuity, and a segment, for each slow frame (logged once a
        minute, see _warn_gap). Each such segment lasts one part target
        (0.333 s by default), although its frame and audio cover the whole
        stall, so the playlist's three target durations (output.py,
        MIN_LISTED_TARGETS) span about 9.5 s of a 2 fps feed.
        """
        files = self._files
        pending = buffer.pending
        if files.part_duration is None or pending is None:
            return False
        seconds = (sample.dts - pending.dts) / VIDEO_TIMESCALE
        if files.last_part is None and self._frame_rate_allows(seconds):
            files.widen_part_target(seconds)
        return is_gap(seconds, files.part_duration)

    def _frame_rate_allows(self, seconds: float) -> bool:
        """Return whether frames of ``seconds`` fit the announced frame rate, if any."""
        frame_rate = self._hints.frame_rate
        return frame_rate is None or seconds * frame_rate <= PART_TARGET_HEADROOM

    def _close_at_gap(self, buffer: TrackBuffer, sample: PendingSample) -> None:
        """End the segment before a gap in the video; the next one is discontinuous.

        A publisher that stalls and then sends on with timestamps that count
        the stall leaves one frame that would last the whole stall. In one
        part it would break PART-TARGET, and in one segment it would change
        EXT-X-TARGETDURATION, which must both stay the same for the session
        (RFC 8216bis). So the frame before the gap gets as much of the gap
        as its part and segment allow (TrackBuffer.gap_frame_ticks), the
        segment ends there, and the segment after it starts with
        EXT-X-DISCONTINUITY at the frame after the gap. Audio that arrived
        during the stall stays in the segment before the gap. The next Cut
        carries that duration, so renditions give their frame the same.
        """
        gap_ticks = sample.dts - buffer.pending.dts  # type: ignore[union-attr]
        gap = gap_ticks / VIDEO_TIMESCALE
        now = self._clock()
        self._gap_times.append(now)
        self._warn_gap(gap, now)
        files = self._files
        assert files.part_duration is not None
        duration = buffer.gap_frame_ticks(
            gap_ticks, files.part_duration, files.target_duration
        )
        buffer.flush_pending(duration)
        self._gap_frame_ticks = duration
        self._cut()
        self._discontinuity_pending = True
        buffer.push(sample)
        self._tap_video(sample)

    def recent_gaps(self, seconds: float) -> int:
        """Return the gaps in the video of the last ``seconds`` (at most MAX_GAPS_KEPT).

        Each ended a segment with a discontinuity (_close_at_gap).
        """
        since = self._clock() - seconds
        return sum(1 for moment in self._gap_times if moment >= since)

    def _warn_gap(self, gap: float, now: float) -> None:
        """Log the gap at ``now``, or leave it to be counted by the next warning.

        After the first warning, the next comes GAP_WARNING_SECONDS later at
        the earliest, with the number of gaps since the last one.
        """
        self._gaps_since_warning += 1
        warned_at = self._gap_warned_at
        if warned_at is not None and now - warned_at < GAP_WARNING_SECONDS:
            return
        count = self._gaps_since_warning
        self._gap_warned_at = now
        self._gaps_since_warning = 0
        if warned_at is None or count == 1:
            logger.warning(
                "%s: %.3f s between two video frames, longer than the %.3f s part"
                " target; ending the segment there and marking a discontinuity",
                self._log_name,
                gap,
                self._files.part_duration,
            )
            return
        logger.warning(
            "%s: %.3f s between two video frames; %d such gaps in the last %.0f s,"
            " each ending a segment with a discontinuity (frames further apart"
            " than the %.3f s part target: publish at a steady frame rate, or"
            " raise hls_part_duration above the longest frame)",
            self._log_name,
            gap,
            count,
            now - warned_at,
            self._files.part_duration,
        )

    def _tap_video(self, sample: PendingSample) -> None:
        cut = None
        if self._segment_opened:
            sequence = self._files.next_sequence
            discontinuity = self._discontinuity_pending or (
                sequence in self._forced_discontinuities
            )
            cut = Cut(sequence, discontinuity, self._gap_frame_ticks)
            self._gap_frame_ticks = None
            self._segment_opened = False
        if self._active_video is not None:
            for tap in list(self._taps):
                tap.video_sample(self._active_video, sample, cut)

    def _cut_at_target(self, elapsed: float) -> bool:
        """Return whether a low-latency segment must end before a non-keyframe.

        EXT-X-TARGETDURATION, and HOLD-BACK of three target durations, must
        not change within a session (RFC 8216bis). So with low-latency HLS a
        segment ends at the target duration even without a keyframe, and a
        publisher whose keyframe interval is longer than the target gets
        segments that start mid-GOP. Their parts still mark keyframes with
        INDEPENDENT=YES, and the playlist then leaves out
        EXT-X-INDEPENDENT-SEGMENTS.
        """
        if self._files.part_duration is None:
            return False
        if elapsed < self._files.target_duration:
            return False
        if not self._long_gop_logged:
            self._long_gop_logged = True
            logger.warning(
                "%s: the keyframe interval is longer than the %d s target "
                "duration; cutting segments at frames that are not keyframes "
                "(publish with a keyframe at least every %d s to avoid this)",
                self._log_name,
                self._files.target_duration,
                self._files.target_duration,
            )
        return True

    def _segment_full(self) -> bool:
        # Runs on every sample, so it adds the two counts without a list.
        size = 0
        if self._video is not None:
            size += self._video.byte_count
        if self._audio is not None:
            size += self._audio.byte_count
        if size < MAX_SEGMENT_BYTES:
            return False
        logger.warning(
            "%s: segment reached %d bytes; cutting it early", self._log_name, size
        )
        return True

    def _video_sample(
        self, buffer: TrackBuffer, time_ms: int, tag: VideoTag
    ) -> PendingSample:
        decode_time = (time_ms - self._origin_ms) * VIDEO_TIMESCALE // 1000
        dts = max(decode_time, 0)
        if buffer.last_dts is not None and dts <= buffer.last_dts:
            dts = buffer.last_dts + 1  # DTS must increase even if RTMP time did not
        presentation_time = decode_time + tag.composition_time * VIDEO_TIMESCALE // 1000
        return PendingSample(dts, tag.data, tag.keyframe, presentation_time - dts)

    def _add_audio_sample(self, time_ms: int, data: bytes) -> None:
        buffer = self._audio
        assert buffer is not None
        dts = self._audio_dts(buffer, time_ms)
        if dts is None:
            return
        if self._video_drives and self._video_behind(buffer, dts):
            self._stall_video(buffer, dts)
        sample = PendingSample(dts, data, True, 0)
        self._place_audio(buffer, sample)
        if self._active_audio is not None:
            for tap in list(self._taps):
                tap.audio_sample(self._active_audio, sample)

    def _place_audio(self, buffer: TrackBuffer, sample: PendingSample) -> None:
        """Push an AAC frame, and cut parts and segments on it when audio times them."""
        audio_drives = not self._video_drives
        if audio_drives and self._audio_gap(buffer, sample):
            # The frame before the gap would last the whole gap, longer than
            # a part. It keeps its own length, the segment ends there, and
            # the next one starts after the gap with a discontinuity.
            buffer.flush_pending(AAC_FRAME_SAMPLES)
            self._cut()
            self._discontinuity_pending = True
        start = buffer.segment_start
        timescale = buffer.track.timescale
        due = (
            audio_drives
            and start is not None
            and sample.dts - start >= self._target * timescale - AAC_FRAME_SAMPLES / 2
        )
        if audio_drives:
            self._write_part_if_due(buffer, next_dts=sample.dts)
        buffer.push(sample)
        if due or self._segment_full():
            self._cut()
        elif audio_drives:
            self._write_part_if_due(buffer)

    def _audio_gap(self, buffer: TrackBuffer, sample: PendingSample) -> bool:
        """Return whether ``sample`` follows a gap in the audio longer than a part."""
        pending = buffer.pending
        part = self._files.part_duration
        if pending is None or part is None:
            return False
        return sample.dts - pending.dts > part * buffer.track.timescale

    def _video_behind(self, audio: TrackBuffer, dts: int) -> bool:
        """Return whether audio at ``dts`` is so far ahead that the video stopped.

        The audio must also have run without a gap for that long. A
        publisher that stalls as a whole leaves a gap in both tracks, and
        its video comes again right after its audio. So _close_at_gap
        handles that stall when the next video frame comes.
        """
        video = self._video
        run_start = self._audio_run_start
        if video is None or video.pending is None or run_start is None:
            return False
        threshold = max(VIDEO_STALL_TARGETS * self._target, MIN_VIDEO_STALL_SECONDS)
        threshold += self._video_lag
        now = dts / audio.track.timescale
        frame_time = video.pending.dts / VIDEO_TIMESCALE
        return now - frame_time > threshold and now - run_start >= threshold

    def _stall_video(self, audio: TrackBuffer, dts: int) -> None:
        """End the segment at the last video frame, so that audio times the media after.

        A publisher whose video stops (a camera that fails, a file whose
        video track is shorter) may go on sending audio. If segments were
        cut only at video keyframes, the open one would grow without end
        and the playlist would stop changing.

        So the last frame gets as much of the gap as its part or segment
        allows (TrackBuffer.gap_frame_ticks). The segment ends where that
        frame ends, and the audio after it opens the next segment. Until
        video comes again (_resume_video), segments and parts of audio
        alone are cut by duration, in the same init segment. The taps see
        the end of the media, so renditions write out their frames and
        list gaps for the audio-only segments.
        """
        video = self._video
        assert video is not None and video.pending is not None
        files = self._files
        frame_dts = video.pending.dts
        gap_ticks = dts * VIDEO_TIMESCALE // audio.track.timescale - frame_dts
        part_seconds = files.part_duration or float(files.target_duration)
        duration = video.gap_frame_ticks(gap_ticks, part_seconds, files.target_duration)
        video.flush_pending(duration)
        audio.flush_pending()
        end = math.ceil(
            (frame_dts + duration) * audio.track.timescale / VIDEO_TIMESCALE
        )
        later = audio.take_samples_from(end)
        self._close_segment()
        self._segment_opened = True
        self._video_stalled = True
        first_audio = later[0].dts if later else dts
        if first_audio - end > AUDIO_DRIFT_FRAMES * AAC_FRAME_SAMPLES:
            # The audio after the last frame starts after a gap: the whole
            # feed stalled before the video stopped.
            self._discontinuity_pending = True
        self._late_frames = 0
        for tap in list(self._taps):
            tap.media_ended()
        # The audio after the last frame may last more than a part or a
        # segment, so it goes in again as audio that times the output.
        for sample in later:
            self._place_audio(audio, sample)
        logger.warning(
            "%s: no video for %.1f s while audio goes on, so segments carry "
            "audio alone until video comes again",
            self._log_name,
            gap_ticks / VIDEO_TIMESCALE,
        )

    def _resume_video(self, buffer: TrackBuffer, time_ms: int, tag: VideoTag) -> None:
        """Start a segment at the first video frame after a stall (_stall_video).

        That frame may depend on frames before the stall. They come from
        the same encoder session, so no discontinuity is marked, and a
        player's decoder still has them. A segment that starts with such
        a frame is marked as not independent, as a cut at the target
        duration is (_cut_at_target).

        A frame from before the start of the open segment came late rather
        than after a stall: the audio of its time is written already. Such
        frames are dropped until a keyframe. A keyframe that is late too
        starts the next segment with a discontinuity, because its time goes
        back, and the stall threshold grows by the lag for the session.
        """
        sample = self._video_sample(buffer, time_ms, tag)
        audio = self._audio
        late = False
        if audio is not None and audio.segment_start is not None:
            # As much slack as audio gets before it counts as a gap.
            slack = AUDIO_DRIFT_FRAMES * AAC_FRAME_SAMPLES
            start = (audio.segment_start - slack) / audio.track.timescale
            late = sample.dts / VIDEO_TIMESCALE < start
        if not tag.keyframe and (late or self._late_frames):
            if not self._late_frames:
                logger.warning(
                    "%s: video came back with frames from before the audio "
                    "already written, so they are dropped until a keyframe",
                    self._log_name,
                )
            self._late_frames += 1
            return
        gap = (sample.dts - (buffer.last_dts or 0)) / VIDEO_TIMESCALE
        self._video_stalled = False
        self._cut()
        if late and audio is not None and audio.last_dts is not None:
            lag = audio.last_dts / audio.track.timescale - sample.dts / VIDEO_TIMESCALE
            self._video_lag = max(self._video_lag, lag)
            self._discontinuity_pending = True
            logger.warning(
                "%s: the video lags the audio by %.1f s, so a stall is now "
                "detected only after that much more audio",
                self._log_name,
                lag,
            )
        buffer.push(sample)
        self._tap_video(sample)
        logger.info(
            "%s: video resumed after %.1f s (at a %s, %d late frames dropped)",
            self._log_name,
            gap,
            "keyframe" if tag.keyframe else "frame that is not a keyframe",
            self._late_frames,
        )

    def _audio_dts(self, buffer: TrackBuffer, time_ms: int) -> int | None:
        """Return the DTS of the next AAC frame, or None to drop it.

        The DTS follows the sample count. When RTMP time runs ahead by more
        than a few frames, the audio has a gap and RTMP time takes over. A
        frame that RTMP time puts that far behind is dropped, because its
        samples would overlap audio already written.
        """
        timescale = buffer.track.timescale
        rtmp_time = (time_ms - self._origin_ms) * timescale // 1000
        expected = buffer.next_audio_dts
        tolerance = AUDIO_DRIFT_FRAMES * AAC_FRAME_SAMPLES
        if expected is None:
            if rtmp_time < 0:
                return None  # before the first video keyframe
            dts = rtmp_time
            self._audio_run_start = dts / timescale
        elif rtmp_time - expected > tolerance:
            logger.debug(
                "%s: audio gap of %d samples", self._log_name, rtmp_time - expected
            )
            dts = rtmp_time
            self._audio_run_start = dts / timescale
        elif expected - rtmp_time > tolerance:
            self._dropped_audio_frames += 1
            if self._dropped_audio_frames % 100 == 1:
                logger.warning(
                    "%s: dropped %d AAC frames so far whose timestamps overlap "
                    "earlier audio",
                    self._log_name,
                    self._dropped_audio_frames,
                )
            return None
        else:
            dts = expected
        buffer.next_audio_dts = dts + AAC_FRAME_SAMPLES
        return dts

    def _drain_audio_backlog(self, since_ms: int) -> None:
        backlog = list(self._audio_backlog)
        self._audio_backlog.clear()
        if self._audio is None:
            return
        for time_ms, data in backlog:
            if time_ms >= since_ms:
                self._add_audio_sample(time_ms, data)

    def _buffers(self) -> list[TrackBuffer]:
        return [buffer for buffer in (self._video, self._audio) if buffer is not None]

    # Output.

    def _write_part_if_due(
        self, primary: TrackBuffer, next_dts: int | None = None
    ) -> None:
        """Write the open part of a low-latency rendition once it is full."""
        if not self._files.part_due(primary, next_dts):
            return
        fragments = [f for b in self._buffers() if (f := b.take_part())]
        sequence = self._files.next_sequence
        self._files.write_part(
            fragments,
            discontinuity=self._discontinuity_pending
            or sequence in self._forced_discontinuities,
            program_date_time=self._date_of(fragments[0]),
            variant=self._variant_source(),
        )

    def _close_segment(self, *, ended: bool = False) -> bool:
        """Write the open segment and the playlists; False when it was empty."""
        fragments = [f for b in self._buffers() if (f := b.take_fragment())]
        if not fragments and not self._files.open_part_count:
            return False
        # With parts written, RenditionFiles keeps the date of the first part.
        date = self._date_of(fragments[0]) if fragments else self.wall_time(0.0)
        sequence = self._files.next_sequence
        forced = sequence in self._forced_discontinuities
        self._forced_discontinuities.discard(sequence)
        discontinuity = self._discontinuity_pending or forced
        duration = self._files.write_segment(
            fragments,
            discontinuity=discontinuity,
            program_date_time=date,
            variant=self._variant_source(),
            ended=ended,
        )
        self._discontinuity_pending = False
        for tap in list(self._taps):
            tap.segment_written(sequence, duration, discontinuity)
        return True

    def _date_of(self, primary: fmp4.Fragment) -> datetime:
        """Return the EXT-X-PROGRAM-DATE-TIME of media starting with ``primary``.

        The date is that of the first picture, so a source with B-frames
        dates segments as the renditions without them do.
        """
        first_pts = primary.base_decode_time + primary.samples[0].composition_offset
        return self.wall_time(first_pts / primary.track.timescale)

    def _variant_source(self) -> VariantSource:
        return VariantSource(
            self._active_video,
            self._active_audio,
            self._hints.bitrate,
            self._hints.frame_rate,
        )

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"{self._log_name}: the segmenter is finished")


_DATA_RATE_KEYS = ("videodatarate", "audiodatarate")


def _track_clocks(log_name: str) -> tuple[TrackClock, TrackClock]:
    """Return new (video, audio) clocks that know each other."""
    video = TrackClock(f"{log_name} video")
    audio = TrackClock(f"{log_name} audio")
    video.partner = audio
    audio.partner = video
    return video, audio


def _positive_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def _rescale(value: int | None, old: int, new: int) -> int | None:
    if value is None:
        return None
    return math.ceil(value * new / old)


def _describe(video: AvcConfig | None, audio: AacConfig | None) -> str:
    parts = []
    if video is not None:
        parts.append(f"video {video.codec_string} {video.width}x{video.height}")
    if audio is not None:
        channels = "1 channel" if audio.channels == 1 else f"{audio.channels} channels"
        parts.append(f"audio {audio.codec_string} {audio.sample_rate} Hz {channels}")
    return ", ".join(parts)
