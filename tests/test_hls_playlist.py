"""Playlist builders compared with exact RFC 8216 text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from realcast_box.hls.playlist import (
    LowLatency,
    PartEntry,
    RenditionReport,
    SegmentEntry,
    SkipRequest,
    VariantEntry,
    media_playlist,
    multivariant_playlist,
    rounded_duration,
    skipped_segment_count,
    target_duration,
)
from tests.llhls_check import merge_delta_update, normalized_playlist


def test_media_playlist_live_window() -> None:
    segments = [
        SegmentEntry("seg-7.m4s", 2.0, "init-0.mp4"),
        SegmentEntry("seg-8.m4s", 1.9666, "init-0.mp4"),
    ]

    text = media_playlist(segments, target_duration=2, media_sequence=7)

    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:7\n"
        "#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-MEDIA-SEQUENCE:7\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MAP:URI="init-0.mp4"\n'
        "#EXTINF:2.000,\n"
        "seg-7.m4s\n"
        "#EXTINF:1.967,\n"
        "seg-8.m4s\n"
    )


def test_media_playlist_ended() -> None:
    segments = [SegmentEntry("seg-0.m4s", 1.5, "init-0.mp4")]

    text = media_playlist(segments, target_duration=2, media_sequence=0, ended=True)

    assert text.endswith("#EXTINF:1.500,\nseg-0.m4s\n#EXT-X-ENDLIST\n")


def test_media_playlist_discontinuity_and_new_map() -> None:
    segments = [
        SegmentEntry("seg-3.m4s", 2.0, "init-0.mp4"),
        SegmentEntry("seg-4.m4s", 2.0, "init-1.mp4", discontinuity=True),
        SegmentEntry("seg-5.m4s", 2.0, "init-1.mp4"),
    ]

    text = media_playlist(
        segments, target_duration=2, media_sequence=3, discontinuity_sequence=2
    )

    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:7\n"
        "#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-MEDIA-SEQUENCE:3\n"
        "#EXT-X-DISCONTINUITY-SEQUENCE:2\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MAP:URI="init-0.mp4"\n'
        "#EXTINF:2.000,\n"
        "seg-3.m4s\n"
        "#EXT-X-DISCONTINUITY\n"
        '#EXT-X-MAP:URI="init-1.mp4"\n'
        "#EXTINF:2.000,\n"
        "seg-4.m4s\n"
        "#EXTINF:2.000,\n"
        "seg-5.m4s\n"
    )


def test_media_playlist_first_entry_discontinuity() -> None:
    segments = [SegmentEntry("seg-4.m4s", 2.0, "init-1.mp4", discontinuity=True)]

    text = media_playlist(segments, target_duration=2, media_sequence=4)

    assert (
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-DISCONTINUITY\n"
        '#EXT-X-MAP:URI="init-1.mp4"\n'
    ) in text


def test_media_playlist_program_date_time() -> None:
    start = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
    segments = [
        SegmentEntry("seg-0.m4s", 2.0, "init-0.mp4", program_date_time=start),
        SegmentEntry(
            "seg-1.m4s",
            2.0,
            "init-0.mp4",
            program_date_time=start + timedelta(seconds=2),
        ),
    ]

    text = media_playlist(segments, target_duration=2, media_sequence=0)

    assert (
        '#EXT-X-MAP:URI="init-0.mp4"\n'
        "#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:30:15.250+00:00\n"
        "#EXTINF:2.000,\n"
        "seg-0.m4s\n"
        "#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:30:17.250+00:00\n"
    ) in text


def test_media_playlist_program_date_time_keeps_offset() -> None:
    start = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    segments = [SegmentEntry("seg-0.m4s", 2.0, "init-0.mp4", program_date_time=start)]

    text = media_playlist(segments, target_duration=2, media_sequence=0)

    assert "#EXT-X-PROGRAM-DATE-TIME:2024-05-01T14:00:00.000+02:00\n" in text


def test_media_playlist_naive_program_date_time_rejected() -> None:
    naive = datetime(2024, 5, 1, 12, 0)
    segments = [SegmentEntry("seg-0.m4s", 2.0, "init-0.mp4", program_date_time=naive)]

    with pytest.raises(ValueError, match=r"seg-0\.m4s"):
        media_playlist(segments, target_duration=2, media_sequence=0)


def test_media_playlist_empty() -> None:
    text = media_playlist([], target_duration=2, media_sequence=0)

    assert text.endswith("#EXT-X-INDEPENDENT-SEGMENTS\n")


def test_multivariant_playlist_video_and_audio() -> None:
    variant = VariantEntry(
        "source/index.m3u8",
        bandwidth=2_750_000,
        codecs=("avc1.64001f", "mp4a.40.2"),
        resolution=(1280, 720),
        frame_rate=30.0,
    )

    text = multivariant_playlist([variant])

    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:7\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=2750000,"
        'CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=30.000\n'
        "source/index.m3u8\n"
    )


def test_multivariant_playlist_one_dependent_variant() -> None:
    variants = [
        VariantEntry("source/index.m3u8", 3_000_000, ("avc1.640028",)),
        VariantEntry("480p/index.m3u8", 1_000_000, ("avc1.64001e",), independent=False),
    ]

    text = multivariant_playlist(variants)

    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in text
    assert text.count("#EXT-X-STREAM-INF:") == 2


def test_multivariant_playlist_audio_only() -> None:
    variant = VariantEntry(
        "source/index.m3u8", bandwidth=140_000, codecs=("mp4a.40.2",)
    )

    text = multivariant_playlist([variant])

    assert text.endswith(
        '#EXT-X-STREAM-INF:BANDWIDTH=140000,CODECS="mp4a.40.2"\nsource/index.m3u8\n'
    )


def test_multivariant_playlist_average_bandwidth_and_order() -> None:
    variants = [
        VariantEntry("source/index.m3u8", 3_000_000, ("avc1.640028",), (1920, 1080)),
        VariantEntry(
            "480p/index.m3u8",
            1_000_000,
            ("avc1.4d401e",),
            (854, 480),
            average_bandwidth=800_000,
        ),
    ]

    lines = multivariant_playlist(variants).splitlines()

    assert lines[3:] == [
        '#EXT-X-STREAM-INF:BANDWIDTH=3000000,CODECS="avc1.640028",RESOLUTION=1920x1080',
        "source/index.m3u8",
        "#EXT-X-STREAM-INF:BANDWIDTH=1000000,AVERAGE-BANDWIDTH=800000,"
        'CODECS="avc1.4d401e",RESOLUTION=854x480',
        "480p/index.m3u8",
    ]


@pytest.mark.parametrize(
    ("duration", "expected"),
    [(2.0, 2), (2.499, 2), (2.5, 3), (1.5, 2), (0.4, 0), (10.02, 10)],
)
def test_rounded_duration_nearest_halves_up(duration: float, expected: int) -> None:
    assert rounded_duration(duration) == expected


def test_target_duration_longest_segment() -> None:
    assert target_duration([2.0, 2.6, 1.9]) == 3


def test_target_duration_never_below_minimum() -> None:
    assert target_duration([1.0, 1.2], minimum=4) == 4


def test_target_duration_at_least_one() -> None:
    assert target_duration([0.2]) == 1


# Playlist delta updates (EXT-X-SKIP), with a window of 20 segments of 2 s.

SKIP_BOUNDARY = 12.0  # six target durations of 2 s


def long_window(first: int, count: int) -> list[SegmentEntry]:
    """Return ``count`` 2 s segments from ``first`` on, numbered from 100.

    Segment 110 starts a new init segment after a discontinuity, and 117
    has a discontinuity and a program date of its own.
    """
    start = datetime(2026, 1, 1, tzinfo=UTC)
    entries = []
    for sequence in range(first, first + count):
        entries.append(
            SegmentEntry(
                f"seg-{sequence}.m4s",
                2.0,
                "init-0.mp4" if sequence < 110 else "init-1.mp4",
                discontinuity=sequence in (110, 117),
                program_date_time=start + timedelta(seconds=2 * (sequence - 100))
                if sequence in (100, 110, 117)
                else None,
                parts=(PartEntry(f"part-{sequence}.0.m4s", 2.0, True),)
                if sequence >= first + count - 2
                else (),
            )
        )
    return entries


def long_window_playlist(
    first: int, skip: SkipRequest | None = None, *, ended: bool = False
) -> str:
    """Return the live playlist of segments ``first`` to ``first + 19``."""
    open_sequence = first + 20
    return media_playlist(
        long_window(first, 20),
        target_duration=2,
        media_sequence=first,
        discontinuity_sequence=3,
        ended=ended,
        low_latency=LowLatency(
            part_target=1.0,
            part_hold_back=3.0,
            open_segment=SegmentEntry(
                f"seg-{open_sequence}.m4s",
                0.0,
                "init-1.mp4",
                parts=(PartEntry(f"part-{open_sequence}.0.m4s", 1.0, True),),
            ),
            preload_hint=f"part-{open_sequence}.1.m4s",
            rendition_reports=[RenditionReport("../low/index.m3u8", open_sequence, 0)],
            skip_boundary=SKIP_BOUNDARY,
        ),
        skip=skip,
    )


def test_skipped_segment_count_at_boundary() -> None:
    segments = long_window(100, 20)

    # Segment 113 has six segments (12 s) after it, segment 114 only five.
    assert skipped_segment_count(segments, SKIP_BOUNDARY) == 14
    assert skipped_segment_count(segments, SKIP_BOUNDARY + 0.5) == 13
    assert skipped_segment_count(segments[:7], SKIP_BOUNDARY) == 1
    assert skipped_segment_count(segments[:6], SKIP_BOUNDARY) == 0


def test_media_playlist_delta_skips_old_segments() -> None:
    full = long_window_playlist(101)
    delta = long_window_playlist(101, SkipRequest.SEGMENTS)
    lines = delta.splitlines()
    uris = [line for line in lines if line.startswith("seg-")]

    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=14" in lines
    assert uris == [f"seg-{sequence}.m4s" for sequence in range(115, 121)]
    assert "#EXT-X-MEDIA-SEQUENCE:101" in lines
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:3" in lines
    # The skipped segments' tags leave with them: the discontinuity and date
    # of segment 110 go, those of segment 117 stay.
    assert lines.count("#EXT-X-DISCONTINUITY") == 1
    assert lines.count("#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:34.000+00:00") == 1
    assert "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:20.000+00:00" not in lines
    # The first listed segment still names its init segment.
    assert lines[lines.index("#EXT-X-SKIP:SKIPPED-SEGMENTS=14") + 1] == (
        '#EXT-X-MAP:URI="init-1.mp4"'
    )
    # Parts, the preload hint and the rendition report stay as they are.
    assert lines[-6:] == full.splitlines()[-6:]
    assert "#EXT-X-SKIP" not in full


def test_media_playlist_delta_merges_into_full() -> None:
    previous = long_window_playlist(100)
    current = long_window_playlist(101)
    delta = long_window_playlist(101, SkipRequest.SEGMENTS)

    assert merge_delta_update(previous, delta) == normalized_playlist(current)
    assert len(delta) < len(current)


def test_media_playlist_delta_version() -> None:
    full = long_window_playlist(101).splitlines()
    delta = long_window_playlist(101, SkipRequest.SEGMENTS).splitlines()
    daterange_delta = long_window_playlist(
        101, SkipRequest.SEGMENTS_AND_DATERANGES
    ).splitlines()

    assert full[1] == "#EXT-X-VERSION:7"
    assert delta[1] == "#EXT-X-VERSION:9"
    assert daterange_delta[1] == "#EXT-X-VERSION:10"
    assert (
        '#EXT-X-SKIP:SKIPPED-SEGMENTS=14,RECENTLY-REMOVED-DATERANGES=""'
        in daterange_delta
    )


def test_media_playlist_can_skip_until() -> None:
    text = long_window_playlist(101)
    control = next(
        line for line in text.splitlines() if line.startswith("#EXT-X-SERVER-CONTROL:")
    )
    attributes = dict(item.split("=") for item in control.partition(":")[2].split(","))

    assert float(attributes["CAN-SKIP-UNTIL"]) == SKIP_BOUNDARY
    assert float(attributes["CAN-SKIP-UNTIL"]) >= 6 * 2


def test_media_playlist_skip_ignored_when_ended() -> None:
    ended = long_window_playlist(101, SkipRequest.SEGMENTS, ended=True)

    assert ended == long_window_playlist(101, ended=True)
    assert "#EXT-X-SKIP" not in ended
    assert "#EXT-X-VERSION:7" in ended


def test_media_playlist_skip_ignored_without_boundary() -> None:
    segments = long_window(100, 20)
    low_latency = LowLatency(part_target=1.0, part_hold_back=3.0)

    full = media_playlist(
        segments, target_duration=2, media_sequence=100, low_latency=low_latency
    )
    requested = media_playlist(
        segments,
        target_duration=2,
        media_sequence=100,
        low_latency=low_latency,
        skip=SkipRequest.SEGMENTS,
    )

    assert requested == full
    assert "CAN-SKIP-UNTIL" not in full
