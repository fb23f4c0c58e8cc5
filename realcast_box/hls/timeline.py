"""Per-track timing for the HLS segmenter: clock unwrapping and sample buffers.

RTMP timestamps are 32-bit milliseconds that wrap at 2**32 and, from some
encoders, jump. TrackClock turns them into an unbounded millisecond timeline
per track; TrackBuffer holds one track's samples of the open segment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from realcast_box.hls import fmp4

logger = logging.getLogger(__name__)

# A track's RTMP timestamp may step back this far, and its DTS is clamped.
# A larger backward step, or a forward step above FORWARD_JUMP_MS, counts as
# a jump of the publisher's clock, so the track continues where it was.
BACKWARD_TOLERANCE_MS = 200
FORWARD_JUMP_MS = 10_000
# A larger step that lands this close to the other track's latest time is
# no jump: this track paused (a video stall) while the other went on.
PARTNER_TOLERANCE_MS = 1000
DEFAULT_FRAME_MS = 33


class TrackClock:
    """Unwraps one track's 32-bit RTMP timestamps into extended milliseconds.

    A step beyond the limits that lands near the other track's latest
    timestamp is taken as it is: the track paused while the other went on.
    NOTE: each track rebases on its own when its clock jumps, so a jump seen
    by only one track shifts it against the other by the size of the jump.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.partner: TrackClock | None = None
        self._last_raw: int | None = None
        self._last_value = 0
        self._step = DEFAULT_FRAME_MS

    def extend(self, raw: int) -> int:
        raw &= 0xFFFFFFFF
        if self._last_raw is None:
            partner = self.partner
            if partner is None or partner._last_raw is None:
                return self._remember(raw, raw)
            # The first timestamp of a track unwraps near the other track's.
            return self._remember(raw, partner._last_value + partner._delta(raw))

        delta = self._delta(raw)
        if -BACKWARD_TOLERANCE_MS <= delta <= FORWARD_JUMP_MS:
            if delta > 0:
                self._step = delta
            return self._remember(raw, self._last_value + delta)
        partner = self.partner
        if partner is not None and partner._last_raw is not None:
            from_partner = partner._delta(raw)
            if abs(from_partner) <= PARTNER_TOLERANCE_MS:
                return self._remember(raw, partner._last_value + from_partner)
        logger.warning(
            "%s timestamp jumped by %d ms (from %d to %d); the timeline "
            "continues without the jump",
            self.name,
            delta,
            self._last_raw,
            raw,
        )
        return self._remember(raw, self._last_value + self._step)

    def _delta(self, raw: int) -> int:
        """Signed 32-bit difference from the last timestamp, so wraps vanish."""
        assert self._last_raw is not None
        return ((raw - self._last_raw + 0x80000000) & 0xFFFFFFFF) - 0x80000000

    def _remember(self, raw: int, value: int) -> int:
        self._last_raw = raw
        self._last_value = value
        return value


@dataclass(slots=True)
class PendingSample:
    dts: int
    data: bytes
    keyframe: bool
    composition_offset: int


class TrackBuffer:
    """The samples of one track in the open segment.

    The newest sample is pending until the next one gives its duration.
    ``samples`` are the committed samples not yet written: the whole open
    segment, or with low-latency HLS the open partial segment.
    """

    def __init__(self, track: fmp4.Track, default_duration: int) -> None:
        self.track = track
        self.samples: list[fmp4.Sample] = []
        self.base_dts = 0
        self.pending: PendingSample | None = None
        self.last_dts: int | None = None
        self.last_duration = default_duration
        self.next_audio_dts: int | None = None
        # Bytes of media in the open segment, which the segmenter caps.
        self.byte_count = 0
        # Duration of ``samples``, in the track's timescale.
        self.part_ticks = 0
        # DTS of the open segment's first committed sample.
        self._segment_base_dts: int | None = None

    @property
    def segment_start(self) -> int | None:
        if self._segment_base_dts is not None:
            return self._segment_base_dts
        return self.pending.dts if self.pending is not None else None

    def push(self, sample: PendingSample) -> None:
        if self.pending is not None:
            self._commit(sample.dts - self.pending.dts)
        self.pending = sample
        self.last_dts = sample.dts

    def flush_pending(self, duration: int | None = None) -> None:
        """Commit the pending sample, by default with the duration of the one before."""
        if self.pending is not None:
            self._commit(self.last_duration if duration is None else duration)

    def gap_frame_ticks(
        self, gap_ticks: int, part_seconds: float, target_duration: int
    ) -> int:
        """Return the duration to give the pending frame when a gap follows it.

        The frame lasts until the next one, ``gap_ticks`` later, but its part
        may not exceed the part target, nor its segment round above the
        target duration. So a frame that starts its part gets as much of
        the gap as fits, and any other frame the duration of the one before.
        """
        pending = self.pending
        if pending is None or self.samples:
            return self.last_duration
        timescale = self.track.timescale
        start = self.segment_start
        used = pending.dts - start if start is not None else 0
        segment_room = int((target_duration + 0.5) * timescale) - 1 - used
        part_room = int(part_seconds * timescale)
        return max(self.last_duration, min(gap_ticks, part_room, segment_room))

    def take_part(self) -> fmp4.Fragment | None:
        """Return the committed samples as a fragment; the segment stays open."""
        if not self.samples:
            return None
        fragment = fmp4.Fragment(self.track, self.base_dts, self.samples)
        self.samples = []
        self.part_ticks = 0
        return fragment

    def take_fragment(self) -> fmp4.Fragment | None:
        """Return the committed samples not yet taken and close the segment."""
        fragment = self.take_part()
        self.byte_count = 0
        self._segment_base_dts = None
        return fragment

    def take_samples_from(self, dts: int) -> list[PendingSample]:
        """Remove and return the committed samples that start at ``dts`` or later.

        They come back as pending samples with their own DTS, so pushing
        them again, in order, gives each its duration back.
        """
        start = self.base_dts
        count = 0
        for sample in self.samples:
            if start >= dts:
                break
            start += sample.duration
            count += 1
        removed = []
        for sample in self.samples[count:]:
            removed.append(
                PendingSample(
                    start, sample.data, sample.keyframe, sample.composition_offset
                )
            )
            start += sample.duration
            self.part_ticks -= sample.duration
            self.byte_count -= len(sample.data)
        del self.samples[count:]
        return removed

    def _commit(self, duration: int) -> None:
        pending = self.pending
        assert pending is not None
        if not self.samples:
            self.base_dts = pending.dts
        if self._segment_base_dts is None:
            self._segment_base_dts = pending.dts
        sample = fmp4.Sample(
            pending.data, duration, pending.keyframe, pending.composition_offset
        )
        self.samples.append(sample)
        self.byte_count += len(pending.data)
        self.part_ticks += duration
        self.last_duration = duration
        self.pending = None
