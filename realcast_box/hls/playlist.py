"""HLS playlist text (RFC 8216) for fMP4 segments, built by pure functions."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

# EXT-X-MAP in a playlist without EXT-X-I-FRAMES-ONLY needs version 6 or
# later (RFC 8216 section 7).
PLAYLIST_VERSION = 7
# RFC 8216bis section 8: a playlist with EXT-X-SKIP needs version 9, and one
# whose EXT-X-SKIP also replaces EXT-X-DATERANGE tags needs version 10.
DELTA_PLAYLIST_VERSION = 9
DATERANGE_DELTA_PLAYLIST_VERSION = 10
# RFC 8216bis: the skip boundary (CAN-SKIP-UNTIL) is at least six target
# durations. The box uses that minimum, so a delta update skips as much as
# the protocol allows.
SKIP_BOUNDARY_TARGETS = 6


class SkipRequest(enum.Enum):
    """The ``_HLS_skip`` delivery directive: which tags a delta update skips."""

    SEGMENTS = "YES"
    # Media segments and EXT-X-DATERANGE tags. The box writes no date
    # ranges, so this update skips the same segments as SEGMENTS.
    SEGMENTS_AND_DATERANGES = "v2"


@dataclass(frozen=True)
class SegmentEntry:
    """One media segment as a media playlist lists it."""

    uri: str
    duration: float  # seconds
    map_uri: str  # the init segment (EXT-X-MAP) that this segment needs
    discontinuity: bool = False  # EXT-X-DISCONTINUITY before this segment
    program_date_time: datetime | None = None  # timezone-aware
    # EXT-X-GAP: the segment is missing from this rendition (its encoder was
    # restarting), and players skip it or take it from another rendition.
    gap: bool = False
    # Low-latency HLS partial segments (EXT-X-PART) written before the EXTINF
    # line. Empty for a segment whose parts have left the playlist.
    parts: tuple[PartEntry, ...] = ()
    # Whether the segment starts with a keyframe (or has no video). The
    # playlist has EXT-X-INDEPENDENT-SEGMENTS only while all listed ones do.
    independent: bool = True


@dataclass(frozen=True)
class PartEntry:
    """One partial segment (EXT-X-PART) of a media segment."""

    uri: str
    duration: float  # seconds
    independent: bool  # starts with a keyframe, or contains only audio


@dataclass(frozen=True)
class RenditionReport:
    """EXT-X-RENDITION-REPORT: the newest part of another rendition."""

    uri: str  # relative to the media playlist that contains the report
    last_msn: int
    last_part: int


@dataclass(frozen=True)
class LowLatency:
    """The low-latency HLS tags of one media playlist (RFC 8216bis).

    ``open_segment`` is the segment being written: the tags before its parts
    (``uri`` and ``duration`` unused) and its parts so far. ``preload_hint``
    is the URI of the next part, None once the playlist has ended.
    """

    part_target: float  # seconds, EXT-X-PART-INF:PART-TARGET
    part_hold_back: float  # seconds, at least 3 part targets
    open_segment: SegmentEntry | None = None
    preload_hint: str | None = None
    rendition_reports: Sequence[RenditionReport] = ()
    # The skip boundary (CAN-SKIP-UNTIL) in seconds, which offers playlist
    # delta updates. None leaves the attribute out, and requests to skip
    # then get the whole playlist.
    skip_boundary: float | None = None


@dataclass(frozen=True)
class VariantEntry:
    """One variant stream (EXT-X-STREAM-INF) of a multivariant playlist."""

    uri: str
    bandwidth: int  # peak segment bit rate, bits per second
    codecs: Sequence[str]
    resolution: tuple[int, int] | None = None
    frame_rate: float | None = None
    average_bandwidth: int | None = None
    # False once the variant has had a segment that does not start with a
    # keyframe in this session. The multivariant playlist then leaves out
    # EXT-X-INDEPENDENT-SEGMENTS, because there it covers every variant.
    independent: bool = True


def clock_media_sequence(wall_seconds: float) -> int:
    """Return the first media sequence number of a session starting at ``wall_seconds``.

    The number is the Unix time in milliseconds. A session that starts later
    starts above every number an earlier session used, across restarts of
    the box too, as long as that session wrote fewer segments than the
    milliseconds it ran for. RFC 8216 allows values up to 2**64 - 1.
    """
    # NOTE: this assumes the system clock is never set backwards. A clock
    # moved back by D seconds can reuse numbers of the last D seconds, and a
    # player that kept an old playlist may then skip or repeat segments.
    return max(0, int(wall_seconds * 1000))


def rounded_duration(duration: float) -> int:
    """Round a segment duration to the nearest integer, halves up."""
    return math.floor(duration + 0.5)


def target_duration(durations: Iterable[float], minimum: int = 1) -> int:
    """Return the EXT-X-TARGETDURATION value for segments of ``durations``.

    RFC 8216 4.3.3.1: each EXTINF duration rounded to the nearest integer
    must not exceed it. Pass the previous value as ``minimum`` so that the
    value never shrinks while the playlist is live.
    """
    return max([minimum, *(rounded_duration(d) for d in durations)])


def skipped_segment_count(
    segments: Sequence[SegmentEntry], skip_boundary: float
) -> int:
    """Return how many leading ``segments`` a delta update replaces with EXT-X-SKIP.

    A segment is skipped when the complete segments after it last at least
    ``skip_boundary`` seconds, so all of it lies further than the boundary
    from the end of the last complete segment. The parts of the segment
    being written are not counted, which can only skip fewer segments.
    """
    remaining = sum(segment.duration for segment in segments)
    count = 0
    for segment in segments:
        remaining -= segment.duration
        # Durations are sums of sample durations, so allow float rounding.
        if remaining < skip_boundary - 1e-6:
            break
        count += 1
    return count


def media_playlist(
    segments: Sequence[SegmentEntry],
    *,
    target_duration: int,
    media_sequence: int,
    discontinuity_sequence: int = 0,
    ended: bool = False,
    low_latency: LowLatency | None = None,
    skip: SkipRequest | None = None,
) -> str:
    """Return a media playlist that lists ``segments`` in order.

    ``media_sequence`` is the sequence number of the first entry and
    ``discontinuity_sequence`` counts the EXT-X-DISCONTINUITY tags of
    segments that have left the list. EXT-X-MAP is written before the first
    entry and again wherever the init segment changes. EXT-X-INDEPENDENT-SEGMENTS
    is written only when every listed segment is independent.

    With ``low_latency``, the playlist also carries EXT-X-SERVER-CONTROL
    (blocking reload, HOLD-BACK of three target durations), the part
    target, the parts of each segment that has them, the open segment's
    parts, the preload hint and the rendition reports. Players without
    low-latency support ignore those tags and play the segments.

    With ``skip``, the result is a playlist delta update (RFC 8216bis): the
    segments that ``skipped_segment_count`` selects, with their tags, give
    way to one EXT-X-SKIP tag, and all other lines stay. ``skip`` is
    ignored, as the protocol requires, unless ``low_latency`` has a skip
    boundary and the playlist has not ended.
    """
    skip_boundary = low_latency.skip_boundary if low_latency is not None else None
    if skip_boundary is None or ended:
        skip = None
    version = PLAYLIST_VERSION
    if skip is SkipRequest.SEGMENTS:
        version = DELTA_PLAYLIST_VERSION
    elif skip is SkipRequest.SEGMENTS_AND_DATERANGES:
        version = DATERANGE_DELTA_PLAYLIST_VERSION
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{version}",
        f"#EXT-X-TARGETDURATION:{target_duration}",
    ]
    if low_latency is not None:
        can_skip = ""
        if skip_boundary is not None:
            can_skip = f"CAN-SKIP-UNTIL={skip_boundary:.3f},"
        lines.append(
            f"#EXT-X-SERVER-CONTROL:{can_skip}CAN-BLOCK-RELOAD=YES,"
            f"HOLD-BACK={3 * target_duration:.3f},"
            f"PART-HOLD-BACK={low_latency.part_hold_back:.3f}"
        )
        lines.append(f"#EXT-X-PART-INF:PART-TARGET={low_latency.part_target:.5f}")
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}")
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    open_segment = low_latency.open_segment if low_latency is not None else None
    if all(segment.independent for segment in segments) and (
        open_segment is None
        or not open_segment.parts
        or open_segment.parts[0].independent
    ):
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")

    if skip is not None:
        assert skip_boundary is not None
        skipped = skipped_segment_count(segments, skip_boundary)
        segments = segments[skipped:]
        # A client that requested to skip date ranges expects the list of
        # those recently removed. The box writes none, so the list is empty.
        removed = ""
        if skip is SkipRequest.SEGMENTS_AND_DATERANGES:
            removed = ',RECENTLY-REMOVED-DATERANGES=""'
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}{removed}")

    # EXT-X-MAP is written before the first listed segment, also in a delta
    # update whose skipped segments used the same init segment.
    current_map = None
    for segment in segments:
        current_map = _segment_tags(lines, segment, current_map)
        if segment.gap:
            lines.append("#EXT-X-GAP")
        lines.append(f"#EXTINF:{segment.duration:.3f},")
        lines.append(segment.uri)

    if low_latency is not None and not ended:
        if low_latency.open_segment is not None:
            _segment_tags(lines, low_latency.open_segment, current_map)
        if low_latency.preload_hint is not None:
            lines.append(
                f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{low_latency.preload_hint}"'
            )
    if ended:
        lines.append("#EXT-X-ENDLIST")
    if low_latency is not None:
        for report in low_latency.rendition_reports:
            lines.append(
                f'#EXT-X-RENDITION-REPORT:URI="{report.uri}",'
                f"LAST-MSN={report.last_msn},LAST-PART={report.last_part}"
            )
    return "\n".join(lines) + "\n"


def _segment_tags(
    lines: list[str], segment: SegmentEntry, current_map: str | None
) -> str:
    """Append the tags that precede a segment's EXTINF, parts included.

    Returns the URI of the init segment in effect after the segment.
    """
    if segment.discontinuity:
        lines.append("#EXT-X-DISCONTINUITY")
    if segment.map_uri != current_map:
        lines.append(f'#EXT-X-MAP:URI="{segment.map_uri}"')
    if segment.program_date_time is not None:
        if segment.program_date_time.tzinfo is None:
            raise ValueError(
                f"program_date_time of {segment.uri} has no time zone; "
                "EXT-X-PROGRAM-DATE-TIME needs one"
            )
        stamp = segment.program_date_time.isoformat(timespec="milliseconds")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp}")
    for part in segment.parts:
        independent = ",INDEPENDENT=YES" if part.independent else ""
        lines.append(
            f'#EXT-X-PART:DURATION={part.duration:.5f},URI="{part.uri}"{independent}'
        )
    return segment.map_uri


def multivariant_playlist(variants: Sequence[VariantEntry]) -> str:
    """Return a multivariant playlist with one EXT-X-STREAM-INF per variant."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{PLAYLIST_VERSION}"]
    if all(variant.independent for variant in variants):
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    for variant in variants:
        lines.append(f"#EXT-X-STREAM-INF:{_stream_attributes(variant)}")
        lines.append(variant.uri)
    return "\n".join(lines) + "\n"


def _stream_attributes(variant: VariantEntry) -> str:
    attributes = [f"BANDWIDTH={variant.bandwidth}"]
    if variant.average_bandwidth is not None:
        attributes.append(f"AVERAGE-BANDWIDTH={variant.average_bandwidth}")
    attributes.append(f'CODECS="{",".join(variant.codecs)}"')
    if variant.resolution is not None:
        width, height = variant.resolution
        attributes.append(f"RESOLUTION={width}x{height}")
    if variant.frame_rate is not None:
        attributes.append(f"FRAME-RATE={variant.frame_rate:.3f}")
    return ",".join(attributes)
