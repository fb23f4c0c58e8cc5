"""Ingest health: what the box measures in a publisher's feed, and warnings.

Everything is measured from the FLV tags as they arrive, without decoding,
so it is cheap enough for the event loop. Rates use media time (the RTMP
timestamps), not arrival time, so a publisher that sends faster or slower
than real time still gets the bitrate and frame rate of its encoding. Each
measurement covers only the last few seconds, so a warning clears once its
cause has gone away.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from realcast_box.hls.timeline import BACKWARD_TOLERANCE_MS, FORWARD_JUMP_MS
from realcast_box.media.codecs import AacConfig, AvcConfig

# Bitrate, frame rate and B-frames cover this much of each track's media time.
WINDOW_MS = 5000
# A track counts as missing when the other track ran this long without it.
TRACK_MISSING_MS = 3000
# Timestamp jumps are reported for this many seconds after they happen.
JUMP_MEMORY_SECONDS = 60.0
# The packager's gaps in the video (Segmenter.recent_gaps) count this long.
GAP_MEMORY_SECONDS = 60.0
# Jumps remembered at most, so that a broken clock cannot grow memory.
MAX_JUMPS_KEPT = 100
# Bitrate and frame rate need this much media time to be reported.
MIN_MEASURE_MS = 1000
# Before the second keyframe, the time since the first is reported from this
# much media time on. A shorter time shows nothing of the encoder's keyframe
# interval, and a longer one is already a problem with 2 s segments.
FIRST_INTERVAL_MS = 5000
# A keyframe interval up to this much above the segment duration is fine:
# millisecond timestamps round a 2 s GOP to 1.999 s or 2.001 s.
KEYFRAME_TOLERANCE_SECONDS = 0.1
# The measured bitrate may exceed max_bitrate_kbps by this factor before it
# counts as far above it, because encoders overshoot for a few seconds.
BITRATE_LIMIT_FACTOR = 1.2


@dataclass(frozen=True)
class IngestReport:
    """Measurements of the connected publisher's feed.

    Values are None until the box has seen enough media to measure them.
    """

    video_codec: str | None = None
    video_profile: str | None = None
    video_codec_string: str | None = None
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    keyframe_interval_seconds: float | None = None
    b_frames: bool = False
    audio_codec: str | None = None
    audio_profile: str | None = None
    audio_codec_string: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    bitrate_kbps: int | None = None
    video_bitrate_kbps: int | None = None
    audio_bitrate_kbps: int | None = None
    timestamp_jumps: int = 0
    video_gaps: int = 0
    video_missing: bool = False
    audio_missing: bool = False


@dataclass(frozen=True)
class IngestWarning:
    code: str
    message: str


class _TrackMeter:
    """Media time and recent frame sizes of one track.

    ``media_ms`` adds up the steps between the track's timestamps, so wraps
    and jumps do not count. A jump adds the last normal step instead.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.media_ms = 0
        self._last_raw: int | None = None
        self._step = 0
        self.recent: deque[tuple[int, int]] = deque()  # (media_ms, bytes)
        self._recent_bytes = 0  # the sum of the sizes in ``recent``

    def add(self, raw: int, size: int) -> bool:
        """Count one frame at RTMP time ``raw`` and return whether the clock jumped."""
        raw &= 0xFFFFFFFF
        jumped = False
        if self._last_raw is not None:
            delta = ((raw - self._last_raw + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            if -BACKWARD_TOLERANCE_MS <= delta <= FORWARD_JUMP_MS:
                if delta > 0:
                    self._step = delta
                    self.media_ms += delta
            else:
                jumped = True
                self.media_ms += self._step
        self._last_raw = raw
        self.frames += 1
        recent = self.recent
        recent.append((self.media_ms, size))
        self._recent_bytes += size
        oldest = self.media_ms - WINDOW_MS
        while recent[0][0] < oldest:
            self._recent_bytes -= recent.popleft()[1]
        return jumped

    def span_ms(self) -> int:
        return self.recent[-1][0] - self.recent[0][0] if self.recent else 0

    def kbps(self) -> int | None:
        """Return kbit/s (bits per millisecond) over the window.

        The first frame's bytes are left out, because its time opens the span.
        """
        span = self.span_ms()
        if span < MIN_MEASURE_MS:
            return None
        bits = 8 * (self._recent_bytes - self.recent[0][1])
        return round(bits / span)

    def frame_rate(self) -> float | None:
        span = self.span_ms()
        if span < MIN_MEASURE_MS:
            return None
        return round((len(self.recent) - 1) * 1000 / span, 2)


class IngestHealth:
    """Measurements of one publisher's feed; a new publisher gets a new one."""

    def __init__(self) -> None:
        self._video = _TrackMeter()
        self._audio = _TrackMeter()
        self._last_keyframe_ms: int | None = None
        self._keyframe_interval_ms: int | None = None
        self._last_reordered_ms: int | None = None
        # Media time of the other track when each track was last seen.
        self._audio_seen_at_video_ms = 0
        self._video_seen_at_audio_ms = 0
        self._jumps: deque[float] = deque(maxlen=MAX_JUMPS_KEPT)

    def add_video(
        self, timestamp: int, size: int, *, keyframe: bool, composition_time: int
    ) -> None:
        """Count one coded video frame (not a sequence header)."""
        video = self._video
        if video.add(timestamp, size):
            self._jumps.append(time.monotonic())
        if keyframe:
            if self._last_keyframe_ms is not None:
                self._keyframe_interval_ms = video.media_ms - self._last_keyframe_ms
            self._last_keyframe_ms = video.media_ms
        if composition_time != 0:
            self._last_reordered_ms = video.media_ms
        self._video_seen_at_audio_ms = self._audio.media_ms

    def add_audio(self, timestamp: int, size: int) -> None:
        """Count one coded audio frame (not a sequence header)."""
        if self._audio.add(timestamp, size):
            self._jumps.append(time.monotonic())
        self._audio_seen_at_video_ms = self._video.media_ms

    def report(
        self, video: AvcConfig | None, audio: AacConfig | None, *, video_gaps: int = 0
    ) -> IngestReport:
        """Return the measurements, with the codec configs the publisher sent.

        ``video_gaps`` comes from the packager (Segmenter.recent_gaps).
        """
        video_kbps = self._video.kbps()
        audio_kbps = self._audio.kbps()
        rates = [rate for rate in (video_kbps, audio_kbps) if rate is not None]
        fields: dict = {
            "frame_rate": self._video.frame_rate(),
            "keyframe_interval_seconds": self._keyframe_interval(),
            "b_frames": self._recently_reordered(),
            "bitrate_kbps": sum(rates) if rates else None,
            "video_bitrate_kbps": video_kbps,
            "audio_bitrate_kbps": audio_kbps,
            "timestamp_jumps": self._recent_jumps(),
            "video_gaps": video_gaps,
            "video_missing": self._missing(self._video, self._video_seen_at_audio_ms),
            "audio_missing": self._missing(self._audio, self._audio_seen_at_video_ms),
        }
        if video is not None:
            fields.update(
                video_codec="h264",
                video_profile=video.profile_name,
                video_codec_string=video.codec_string,
                width=video.width,
                height=video.height,
            )
        if audio is not None:
            fields.update(
                audio_codec="aac",
                audio_profile=audio.profile_name,
                audio_codec_string=audio.codec_string,
                audio_sample_rate=audio.sample_rate,
                audio_channels=audio.channels,
            )
        return IngestReport(**fields)

    def _keyframe_interval(self) -> float | None:
        """Return seconds between the last two keyframes, or since the last if longer.

        None before the first keyframe, and before the second one until
        FIRST_INTERVAL_MS have passed since the first.
        """
        if self._last_keyframe_ms is None:
            return None
        interval = self._video.media_ms - self._last_keyframe_ms
        if self._keyframe_interval_ms is not None:
            interval = max(interval, self._keyframe_interval_ms)
        elif interval < FIRST_INTERVAL_MS:
            return None
        return interval / 1000

    def _recently_reordered(self) -> bool:
        last = self._last_reordered_ms
        return last is not None and self._video.media_ms - last <= WINDOW_MS

    def _recent_jumps(self) -> int:
        since = time.monotonic() - JUMP_MEMORY_SECONDS
        return sum(1 for moment in self._jumps if moment >= since)

    def _missing(self, track: _TrackMeter, seen_at_other_ms: int) -> bool:
        """Return whether the other track ran TRACK_MISSING_MS since ``track``."""
        other = self._audio if track is self._video else self._video
        if other.frames == 0:
            return False  # no media at all is not a missing track
        return other.media_ms - seen_at_other_ms >= TRACK_MISSING_MS


def ingest_warnings(
    report: IngestReport,
    *,
    segment_duration: float,
    max_bitrate_kbps: float | None = None,
) -> list[IngestWarning]:
    """Return the problems ``report`` shows, each with how to fix it."""
    warnings = []
    interval = report.keyframe_interval_seconds
    longest_interval = segment_duration + KEYFRAME_TOLERANCE_SECONDS
    if interval is not None and interval > longest_interval:
        warnings.append(
            IngestWarning(
                "keyframe_interval_too_long",
                f"Keyframes arrive every {interval:.1f} s, but HLS segments are "
                f"cut at keyframes every {segment_duration:g} s, so segments run "
                "long and viewers lag behind. Set the encoder's keyframe interval "
                f"to {segment_duration:g} s (OBS: Output > Keyframe Interval; "
                "ffmpeg: -g set to the frame rate times the seconds).",
            )
        )
    if report.video_missing:
        warnings.append(
            IngestWarning(
                "no_video",
                "The feed has audio but no video. If viewers should see a "
                "picture, add a video source in the encoder and make sure it "
                "sends H.264.",
            )
        )
    if report.audio_missing:
        warnings.append(
            IngestWarning(
                "no_audio",
                "The feed has video but no audio. If viewers should hear sound, "
                "add an audio source in the encoder and make sure it sends AAC.",
            )
        )
    if report.b_frames:
        warnings.append(
            IngestWarning(
                "b_frames",
                "The encoder sends B-frames. They add delay and some players "
                "handle them poorly, and the box's HLS output does not need "
                "them. Set B-frames to 0 (OBS x264 options: bframes=0; "
                "ffmpeg: -bf 0).",
            )
        )
    limit = max_bitrate_kbps
    bitrate = report.bitrate_kbps
    if limit and bitrate is not None and bitrate > limit * BITRATE_LIMIT_FACTOR:
        warnings.append(
            IngestWarning(
                "bitrate_above_limit",
                f"The feed runs at {bitrate} kbit/s, far above the limit of "
                f"{limit:g} kbit/s (max_bitrate_kbps in the stream or app "
                "settings). Lower the encoder's video bitrate so that video and "
                f"audio together stay under {limit:g} kbit/s.",
            )
        )
    if report.timestamp_jumps:
        warnings.append(
            IngestWarning(
                "timestamp_jumps",
                f"The feed's timestamps jumped {report.timestamp_jumps} times in "
                f"the last {JUMP_MEMORY_SECONDS:g} s. The box smooths them over, "
                "but players may stutter or lose audio sync. Use a constant "
                "frame rate in the encoder and check the clock of the capture "
                "source.",
            )
        )
    if report.video_gaps:
        warnings.append(
            IngestWarning(
                "video_gaps",
                f"In the last {GAP_MEMORY_SECONDS:g} s, {report.video_gaps} gaps "
                "between two video frames were longer than the low-latency part "
                "target, and each ended a segment with a discontinuity. Players "
                "may skip media or stall. Publish at a "
                "steady frame rate (a screen capture that drops its frame rate "
                "when the picture is still does this), or raise "
                "hls_part_duration above the longest frame.",
            )
        )
    return warnings


def bitrate_limit(
    stream_settings: Mapping[str, Any], app_settings: Mapping[str, Any] | None
) -> float | None:
    """Return max_bitrate_kbps of the stream's settings, else the app's, else None.

    Settings are free-form objects, so a value that is not a positive number
    counts as unset.
    """
    value = stream_settings.get("max_bitrate_kbps")
    if value is None and app_settings is not None:
        value = app_settings.get("max_bitrate_kbps")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)
