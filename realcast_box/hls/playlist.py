"""HLS playlist text (RFC 8216) for fMP4 segments, built by pure functions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

# EXT-X-MAP in a playlist without EXT-X-I-FRAMES-ONLY needs version 6 or
# later (RFC 8216 section 7).
PLAYLIST_VERSION = 7


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


@dataclass(frozen=True)
class VariantEntry:
    """One variant stream (EXT-X-STREAM-INF) of a multivariant playlist."""

    uri: str
    bandwidth: int  # peak segment bit rate, bits per second
    codecs: Sequence[str]
    resolution: tuple[int, int] | None = None
    frame_rate: float | None = None
    average_bandwidth: int | None = None


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


def media_playlist(
    segments: Sequence[SegmentEntry],
    *,
    target_duration: int,
    media_sequence: int,
    discontinuity_sequence: int = 0,
    ended: bool = False,
) -> str:
    """Return a media playlist that lists ``segments`` in order.

    ``media_sequence`` is the sequence number of the first entry and
    ``discontinuity_sequence`` counts the EXT-X-DISCONTINUITY tags of
    segments that have left the list. EXT-X-MAP is written before the first
    entry and again wherever the init segment changes.
    """
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{PLAYLIST_VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration}",
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
    ]
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")

    current_map = None
    for segment in segments:
        if segment.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if segment.map_uri != current_map:
            lines.append(f'#EXT-X-MAP:URI="{segment.map_uri}"')
            current_map = segment.map_uri
        if segment.program_date_time is not None:
            if segment.program_date_time.tzinfo is None:
                raise ValueError(
                    f"program_date_time of {segment.uri} has no time zone; "
                    "EXT-X-PROGRAM-DATE-TIME needs one"
                )
            stamp = segment.program_date_time.isoformat(timespec="milliseconds")
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp}")
        if segment.gap:
            lines.append("#EXT-X-GAP")
        lines.append(f"#EXTINF:{segment.duration:.3f},")
        lines.append(segment.uri)

    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def multivariant_playlist(variants: Sequence[VariantEntry]) -> str:
    """Return a multivariant playlist with one EXT-X-STREAM-INF per variant."""
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{PLAYLIST_VERSION}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
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
