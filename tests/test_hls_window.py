"""The live media playlist's sliding window, and how long its segments stay on disk.

RFC 8216 (section 6.2.2) sets two rules for a live playlist. A segment may
leave it only if the segments left last at least three target durations,
and a segment that left must stay available for its own duration plus the
duration of the longest playlist that listed it. The window of
``hls_window`` segments gives way to both.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flvfile import VIDEO_TAG, FlvTag, encode_flv, read_tags

from realcast_box.hls import fmp4
from realcast_box.hls.output import MAX_LISTED_SEGMENTS, RenditionFiles, VariantSource
from realcast_box.hls.segmenter import Segmenter
from realcast_box.media.codecs import parse_avc_config
from realcast_box.media.flv import parse_video_tag
from tests.box import start_box
from tests.llhls_check import parse_playlist
from tests.test_hls_low_latency import (
    PART_TARGET,
    feed_tag,
    get_text,
    low_latency_files,
    video_fragment,
    wait_for_media_playlist,
    write_two_second_segments,
)
from tests.test_ingest_raw import RawPublisher

TIMESCALE = 90000
WRITTEN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def video_tags() -> list[FlvTag]:
    return read_tags(encode_flv(seconds=10, fps=30, gop=30, audio=False))


class Writer:
    """Writes regular HLS segments of chosen durations, each one keyframe."""

    def __init__(
        self, directory: Path, tags: list[FlvTag], *, window: int, target: float
    ) -> None:
        header = next(t for t in tags if t.kind == VIDEO_TAG and not t.is_media_frame)
        frame = next(t for t in tags if t.kind == VIDEO_TAG and t.is_media_frame)
        self.track = fmp4.Track(
            1, TIMESCALE, parse_avc_config(parse_video_tag(header.payload).data)
        )
        self.sample = fmp4.Sample(parse_video_tag(frame.payload).data, 0, True)
        self.files = RenditionFiles(
            directory,
            "source",
            target_duration=target,
            window=window,
            first_sequence=0,
            log_name="test",
        )
        self.files.write_init([self.track])
        self.source = VariantSource(self.track.config, None, None, 30.0)
        self.folder = directory / "source"
        self.decode_time = 0

    def write(self, seconds: float, count: int = 1) -> None:
        ticks = round(seconds * TIMESCALE)
        for _ in range(count):
            sample = replace(self.sample, duration=ticks)
            fragment = fmp4.Fragment(self.track, self.decode_time, [sample])
            self.files.write_segment(
                [fragment],
                discontinuity=False,
                program_date_time=WRITTEN,
                variant=self.source,
            )
            self.decode_time += ticks

    def playlist(self):
        return parse_playlist((self.folder / "index.m3u8").read_text())

    def on_disk(self) -> list[int]:
        names = self.folder.glob("seg-*.m4s")
        return sorted(int(path.stem.removeprefix("seg-")) for path in names)


def test_window_short_segments_listed_longer(tmp_path, video_tags) -> None:
    writer = Writer(tmp_path, video_tags, window=6, target=2.0)

    writer.write(0.5, count=20)
    short = writer.playlist()
    writer.write(2.0, count=6)
    normal = writer.playlist()

    # 2 s targets need 6 s listed: twelve segments of 0.5 s, not six.
    assert short.target_duration == 2
    assert [segment.duration for segment in short.segments] == [0.5] * 12
    assert short.media_sequence == 8
    assert [segment.duration for segment in normal.segments] == [2.0] * 6
    assert normal.media_sequence == 20


def test_window_left_segments_kept_on_disk(tmp_path, video_tags) -> None:
    writer = Writer(tmp_path, video_tags, window=3, target=2.0)

    writer.write(2.0, count=10)

    # Segment k leaves the playlist when segment k + 3 completes, at 2k + 8 s
    # of media. The longest playlist that listed it lasted 8 s, so it stays on
    # disk until 2k + 8 + 2 + 8 s. At 20 s, segments 0 and 1 are gone.
    assert [segment.msn for segment in writer.playlist().segments] == [7, 8, 9]
    assert writer.on_disk() == list(range(2, 10))


def test_window_gap_burst_keeps_listed_files(tmp_path, video_tags) -> None:
    # A transcoded rendition whose encoder dropped out writes a gap entry per
    # missed segment at once. The playlist on disk is rewritten only at the
    # next segment, so every file it lists must still be there.
    writer = Writer(tmp_path, video_tags, window=6, target=1.0)
    writer.write(1.0, count=10)

    for _ in range(30):
        writer.files.write_gap(1.0)
    during = writer.on_disk()

    listed = [segment.msn for segment in writer.playlist().segments]
    writer.write(1.0)
    after = writer.on_disk()

    assert listed == list(range(4, 10))
    assert set(listed) <= set(during)
    # Their time on disk starts when the playlist on disk drops them.
    assert set(listed) <= set(after)


def test_window_left_segment_kept_for_longest_listing(tmp_path, video_tags) -> None:
    # Seven 2 s segments (14 s, with the one just completed) listed segment
    # 14. When the segments fall to 0.5 s, the playlist shrinks toward 6 s
    # before segment 14 leaves it, and it stays on disk for 2 s plus 14 s.
    writer = Writer(tmp_path, video_tags, window=6, target=2.0)
    writer.write(2.0, count=20)
    media_seconds = 40.0
    left_at = None
    while media_seconds < 80.0:
        writer.write(0.5)
        media_seconds += 0.5
        if left_at is None and writer.playlist().media_sequence > 14:
            left_at = media_seconds
        if left_at is not None and media_seconds < left_at + 16.0:
            assert 14 in writer.on_disk(), media_seconds

    assert left_at is not None
    assert 14 not in writer.on_disk()


def test_window_due_segment_deleted_out_of_order(tmp_path, video_tags) -> None:
    # Each 2 s segment was listed in a 42 s playlist (21 segments), so
    # segment 29, which leaves at 70 s of media, stays until 114 s. Segment
    # 60, of 0.5 s, leaves at 85.5 s from playlists of at most 10.5 s, so
    # it goes at 96.5 s, while the older segment 29 is still kept.
    writer = Writer(tmp_path, video_tags, window=20, target=2.0)
    writer.write(2.0, count=30)

    writer.write(0.5, count=100)

    assert 29 in writer.on_disk()
    assert 60 not in writer.on_disk()


def test_window_listed_segments_bounded(tmp_path, video_tags) -> None:
    # Segments without duration never add up to three target durations.
    writer = Writer(tmp_path, video_tags, window=6, target=1.0)

    writer.write(0.0, count=MAX_LISTED_SEGMENTS + 5)

    assert len(writer.playlist().segments) == MAX_LISTED_SEGMENTS


def test_window_left_parts_kept_in_memory(tmp_path, video_tags) -> None:
    files = low_latency_files(tmp_path, 0, part_duration=1.0)

    write_two_second_segments(files, video_tags, count=10)
    listed = parse_playlist(files.live_playlist().decode())

    # The parts of segment k leave the playlist when segment k + 2 completes,
    # at 2k + 6 s of media, and stay for three 2 s target durations, until
    # 2k + 12 s. At 20 s, those of segments 5 to 7 are kept.
    assert {part.position[0] for part in listed.parts} == {8, 9, 10}
    assert files.live_part("part-4.1.m4s") is None
    for msn in (5, 6, 7):
        assert files.live_part(f"part-{msn}.0.m4s") is not None
        assert files.live_part(f"part-{msn}.1.m4s") is not None


def test_window_ended_playlist_keeps_left_parts(tmp_path, video_tags) -> None:
    # Parts whose tags left the playlist lately go to disk with the ended
    # playlist, because its end does not shorten their availability.
    files = low_latency_files(tmp_path, 0, part_duration=1.0)
    write_two_second_segments(files, video_tags, count=10)

    files.end()

    folder = tmp_path / "source"
    assert not (folder / "part-4.0.m4s").exists()
    for msn in (5, 6, 7, 8, 9):
        assert (folder / f"part-{msn}.0.m4s").exists(), msn
        assert (folder / f"part-{msn}.1.m4s").exists(), msn


def test_window_parts_bounded_without_media_time(tmp_path, video_tags) -> None:
    # Parts without duration never let the media time reach their deadline.
    files = low_latency_files(tmp_path, 0, part_duration=1.0)
    track, fragment = video_fragment(video_tags)
    fragment = replace(fragment, samples=[replace(fragment.samples[0], duration=0)])
    source = VariantSource(track.config, None, None, 30.0)
    files.write_init([track])
    count = MAX_LISTED_SEGMENTS + 10
    for _ in range(count):
        files.write_part([fragment], discontinuity=False, program_date_time=WRITTEN)
        files.write_segment(
            [], discontinuity=False, program_date_time=WRITTEN, variant=source
        )

    assert files.live_part("part-5.0.m4s") is None
    assert files.live_part(f"part-{count - 1}.0.m4s") is not None


def slowing_tags(tags: list[FlvTag], fast_frames: int) -> list[FlvTag]:
    """Return the video of ``tags`` at 30 fps for ``fast_frames``, then 2 fps."""
    video = [tag for tag in tags if tag.kind == VIDEO_TAG]
    headers = [tag for tag in video if not tag.is_media_frame]
    frames = [tag for tag in video if tag.is_media_frame]
    stamps = [index * 33 for index in range(fast_frames)]
    stamps += [stamps[-1] + 500 * (n + 1) for n in range(len(frames) - fast_frames)]
    return headers + [
        replace(frame, timestamp=stamp)
        for frame, stamp in zip(frames, stamps, strict=True)
    ]


def test_window_slowed_feed_lists_enough(tmp_path, video_tags) -> None:
    # After its first parts, each 0.5 s frame of a feed that fell to 2 fps
    # ends a segment of one part target (0.333 s). Six such segments would
    # list 2 s.
    segmenter = Segmenter(
        tmp_path / "stream",
        target_duration=2.0,
        part_duration=PART_TARGET,
        window=6,
    )
    files = segmenter.files
    listed: list[float] = []
    left = False
    for tag in slowing_tags(video_tags, fast_frames=90):
        feed_tag(segmenter, tag)
        text = files.live_playlist()
        if text is None:
            continue
        playlist = parse_playlist(text.decode())
        if playlist.media_sequence > 0:
            left = True
            listed.append(sum(segment.duration for segment in playlist.segments))

    assert left
    assert min(listed) >= 3 * 2.0


async def test_window_slowed_push_served(aiohttp_client, tmp_path, video_tags) -> None:
    # The same slowing feed over RTMP, with the default settings (2 s
    # targets, 0.333 s parts, 6 segments): the playlist that players get
    # lists at least 6 s, and every segment it lists, or that just left
    # it, is served.
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()
    tags = slowing_tags(video_tags, fast_frames=90)

    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    try:
        await publisher.publish()
        await publisher.send_tags(tags)
        path = await wait_for_media_playlist(box, stream["id"])
        deadline = asyncio.get_running_loop().time() + 30
        seen: list[int | None] = []
        while True:
            # The packager is done with the feed once the newest segment
            # stays the same for a second.
            await asyncio.sleep(0.5)
            playlist = parse_playlist(await get_text(box, path))
            seen.append(playlist.segments[-1].msn if playlist.segments else None)
            if len(seen) >= 3 and seen[-1] is not None and len(set(seen[-3:])) == 1:
                break
            assert asyncio.get_running_loop().time() < deadline, playlist.text
        folder = path.rpartition("/")[0]
        statuses = []
        for msn in range(playlist.media_sequence - 2, playlist.open_msn):
            response = await box.client.get(f"{folder}/seg-{msn}.m4s")
            statuses.append(response.status)
    finally:
        await publisher.close()

    listed = sum(segment.duration for segment in playlist.segments)
    assert listed >= 3 * 2.0, playlist.text
    # Each slow frame's segment lasts one part target (0.333 s), and 19 are
    # the fewest that list 6 s.
    assert {segment.duration for segment in playlist.segments} == {0.333}
    assert len(playlist.segments) == 19
    assert statuses == [200] * len(statuses)
