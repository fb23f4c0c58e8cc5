"""A publisher whose video stops while its audio goes on.

The packager then cuts segments and parts on the audio alone, so the
playlist keeps growing, and each segment's EXTINF covers the media in it.
The packager tests feed real FLV tags and read each segment back with
PyAV; the end-to-end tests push over RTMP with the ffmpeg CLI.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from flvfile import AUDIO_TAG, VIDEO_TAG, FlvTag, encode_flv, read_tags, write_flv

from realcast_box.hls.segmenter import Segmenter
from tests.box import start_box
from tests.llhls_check import parse_playlist
from tests.test_hls_frame_timing import (
    DURATION_SLACK,
    long_parts,
    push_through_ladder,
    segment_lines,
    start_ffmpeg_push,
)
from tests.test_hls_low_latency import (
    LIVE_SETTINGS,
    PART_TARGET,
    feed_tag,
    get_text,
    package_tag_by_tag,
    stop,
    wait_for_media_playlist,
)

# The feed: 10 s of 30 fps video with a keyframe each second and AAC at
# 44.1 kHz. Video frames from STALL_START_MS to STALL_END_MS are left out.
FEED_SECONDS = 10
STALL_START_MS = 3000
STALL_END_MS = 7100
# One AAC frame at 44.1 kHz, the most that audio may pass its segment's end.
AAC_FRAME_SECONDS = 1024 / 44100


def stalled_tags(stall_end_ms: int = STALL_END_MS) -> list[FlvTag]:
    """Return the feed's tags without the video frames of the stall."""
    tags = read_tags(encode_flv(seconds=FEED_SECONDS, fps=30, gop=30))
    return without(tags, VIDEO_TAG, STALL_START_MS, stall_end_ms)


def without(tags: list[FlvTag], kind: int, start_ms: int, end_ms: int) -> list:
    """Return ``tags`` without the media frames of ``kind`` in [start_ms, end_ms)."""
    return [
        tag
        for tag in tags
        if not (
            tag.kind == kind
            and tag.is_media_frame
            and start_ms <= tag.timestamp < end_ms
        )
    ]


def media_spans(init: bytes, segment: bytes) -> dict[str, tuple[float, float]]:
    """Return (first time, end) in seconds of each track of one segment, by kind.

    Decode times, read with PyAV from the init segment and the segment.
    """
    spans: dict[str, tuple[float, float]] = {}
    with av.open(io.BytesIO(init + segment)) as container:
        for packet in container.demux():
            if packet.dts is None or packet.duration is None:
                continue
            base = packet.time_base
            start = float(packet.dts * base)
            end = float((packet.dts + packet.duration) * base)
            kind = packet.stream.type
            first, last = spans.get(kind, (start, end))
            spans[kind] = (min(first, start), max(last, end))
    return spans


@dataclass
class Listed:
    """One listed segment: its EXTINF, whether a discontinuity comes before
    it, and the first time and end of each of its tracks (media_spans)."""

    duration: float
    discontinuity: bool
    spans: dict[str, tuple[float, float]]

    @property
    def start(self) -> float:
        return min(first for first, _ in self.spans.values())


def segment_timeline(directory: Path, text: str) -> list[Listed]:
    """Return each segment that the playlist lists, read from ``directory``."""
    result = []
    init = b""
    duration = 0.0
    discontinuity = False
    for line in text.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            name = re.search(r'URI="([^"?]+)', line).group(1)
            init = (directory / name).read_bytes()
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:") :].split(",")[0])
        elif line and not line.startswith("#"):
            segment = (directory / line.split("?")[0]).read_bytes()
            result.append(Listed(duration, discontinuity, media_spans(init, segment)))
            discontinuity = False
    return result


def timeline_problems(timeline: list[Listed]) -> list[str]:
    """Check that each segment's media fits its EXTINF and the next goes on from it.

    Across a discontinuity the time may go anywhere.
    """
    problems = []
    for index, listed in enumerate(timeline):
        end_limit = listed.start + listed.duration + AAC_FRAME_SECONDS
        for kind, (_, end) in listed.spans.items():
            if end > end_limit + DURATION_SLACK:
                problems.append(
                    f"segment {index}: {kind} ends at {end:.3f} s, after "
                    f"{listed.start:.3f} + EXTINF {listed.duration}"
                )
        following = timeline[index + 1] if index + 1 < len(timeline) else None
        if following is not None and not following.discontinuity:
            expected = listed.start + listed.duration
            if abs(following.start - expected) > AAC_FRAME_SECONDS:
                problems.append(
                    f"segment {index + 1} starts at {following.start:.3f} s, "
                    f"not at {listed.start:.3f} + EXTINF {listed.duration}"
                )
    return problems


def test_llhls_video_stall_audio_segments(tmp_path) -> None:
    directory = tmp_path / "stream"
    packaged = package_tag_by_tag(directory, stalled_tags())
    final = packaged.versions[-1]
    playlist = parse_playlist(final)
    timeline = segment_timeline(directory / "source", final)

    assert long_parts(packaged.versions) == []
    assert timeline_problems(timeline) == []
    # Segments of audio alone fill the stall, so the playlist lists about
    # the whole feed, each segment within EXT-X-TARGETDURATION (1 s).
    assert abs(sum(segment.duration for segment in playlist.segments) - 10) < 0.1
    assert max(round(segment.duration) for segment in playlist.segments) <= 1
    assert len([item for item in timeline if "video" not in item.spans]) >= 3
    # Video resumes at a frame that is not a keyframe, in the same encoder
    # session: no discontinuity, and not every segment is independent.
    assert "#EXT-X-DISCONTINUITY" not in final
    multivariant = (directory / "index.m3u8").read_text()
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in multivariant


def test_llhls_video_stall_playlist_grows(tmp_path, caplog) -> None:
    # The playlist moves on once audio is one target duration ahead of the
    # last frame, long before the video comes back.
    tags = stalled_tags()
    segmenter = Segmenter(
        tmp_path / "stream", target_duration=1.0, part_duration=PART_TARGET
    )
    stall_audio = [
        tag
        for tag in tags
        if tag.kind != VIDEO_TAG
        and tag.is_media_frame
        and STALL_START_MS <= tag.timestamp < STALL_END_MS
    ]
    with caplog.at_level(logging.WARNING, logger="realcast_box.hls.segmenter"):
        for tag in tags:
            feed_tag(segmenter, tag)
            if tag is stall_audio[-1]:
                break
    sequence_at_stall_end = segmenter.next_sequence
    playlist = parse_playlist(segmenter.files.live_playlist().decode())

    assert sequence_at_stall_end - playlist.segments[0].msn >= 6
    assert any(
        "no video for" in record.getMessage() and "audio goes on" in record.getMessage()
        for record in caplog.records
    )


def test_segmenter_video_stall_regular_hls(tmp_path) -> None:
    # Without low-latency HLS the same holds for whole segments.
    directory = tmp_path / "stream"
    segmenter = Segmenter(directory, target_duration=1.0, window=100)
    for tag in stalled_tags(stall_end_ms=7000):
        feed_tag(segmenter, tag)
    segmenter.finish()
    final = (directory / "source" / "index.m3u8").read_text()
    timeline = segment_timeline(directory / "source", final)

    assert timeline_problems(timeline) == []
    durations = [item.duration for item in timeline]
    assert abs(sum(durations) - 10) < 0.1
    assert max(round(duration) for duration in durations) <= 1
    assert len([item for item in timeline if "video" not in item.spans]) >= 3
    # Here video resumes at a keyframe, so every segment is independent.
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in (directory / "index.m3u8").read_text()


@pytest.fixture(scope="module")
def long_feed() -> list[FlvTag]:
    """20 s of the feed's kind: 30 fps, a keyframe each second, AAC."""
    return read_tags(encode_flv(seconds=20, fps=30, gop=30))


def test_llhls_video_stall_longer_than_clock_jump(tmp_path, long_feed) -> None:
    # A step of more than 10 s in one track's timestamps is taken for a
    # jump of the publisher's clock, unless it lands near the other
    # track's time: then the video only paused, and it resumes at 13 s.
    directory = tmp_path / "stream"
    tags = without(long_feed, VIDEO_TAG, 3000, 13000)
    final = package_tag_by_tag(directory, tags).versions[-1]
    timeline = segment_timeline(directory / "source", final)

    assert timeline_problems(timeline) == []
    assert "#EXT-X-DISCONTINUITY" not in final
    assert abs(sum(item.duration for item in timeline) - 20) < 0.1
    assert len(timeline) <= 21
    resumed = [item.spans["video"][0] for item in timeline if "video" in item.spans]
    assert [start for start in resumed if 3.5 < start < 12.9] == []


def test_llhls_video_stall_with_audio_glitch(tmp_path, long_feed) -> None:
    # 100 ms of audio missing early in the stall (4 AAC frames, more than
    # the drift tolerance) delays the stall's detection, no more.
    directory = tmp_path / "stream"
    tags = without(without(long_feed, VIDEO_TAG, 3000, 12000), AUDIO_TAG, 3500, 3600)
    final = package_tag_by_tag(directory, tags).versions[-1]
    timeline = segment_timeline(directory / "source", final)

    assert timeline_problems(timeline) == []
    assert max(round(item.duration) for item in timeline) <= 1
    assert len([item for item in timeline if "video" not in item.spans]) >= 6


@pytest.mark.parametrize("video", [True, False], ids=["video_stall", "audio_only"])
def test_llhls_audio_gap_while_audio_times_parts(tmp_path, long_feed, video) -> None:
    # 600 ms of missing audio, longer than a part, while audio times the
    # parts: the segment ends before the gap, and the next starts after
    # it with a discontinuity, so no part is longer than PART-TARGET.
    if video:
        tags = without(long_feed, VIDEO_TAG, 3000, 7000)
    else:
        tags = [tag for tag in long_feed if tag.kind != VIDEO_TAG]
    tags = without(tags, AUDIO_TAG, 5000, 5600)
    directory = tmp_path / "stream"
    packaged = package_tag_by_tag(directory, tags)
    final = packaged.versions[-1]
    timeline = segment_timeline(directory / "source", final)

    assert long_parts(packaged.versions) == []
    assert timeline_problems(timeline) == []
    assert final.count("#EXT-X-DISCONTINUITY") == 1
    assert max(round(item.duration) for item in timeline) <= 1


def lagging_tags() -> list[FlvTag]:
    """Return the feed with the video of 3 s to 5.6 s sent after the audio of 5.6 s.

    The video lags the audio by up to 2.6 s for a while, more than the
    stall threshold, and then catches up in a burst: none of it is missing.
    """
    tags = read_tags(encode_flv(seconds=FEED_SECONDS, fps=30, gop=30))
    delayed = [
        tag
        for tag in tags
        if tag.kind == VIDEO_TAG and tag.is_media_frame and 3000 <= tag.timestamp < 5600
    ]
    rest = [tag for tag in tags if tag not in delayed]
    release = next(
        index
        for index, tag in enumerate(rest)
        if tag.kind != VIDEO_TAG and tag.is_media_frame and tag.timestamp >= 5600
    )
    return rest[:release] + delayed + rest[release:]


def test_llhls_lagging_video_kept(tmp_path, caplog) -> None:
    # The lag looks like a stall at first. The late video then starts a
    # segment with a discontinuity at its keyframe, no frame is lost, and
    # the larger threshold keeps the rest of the feed from another stall.
    directory = tmp_path / "stream"
    tags = lagging_tags()
    with caplog.at_level(logging.INFO, logger="realcast_box.hls.segmenter"):
        final = package_tag_by_tag(directory, tags).versions[-1]
    timeline = segment_timeline(directory / "source", final)
    frames = sum(1 for tag in tags if tag.kind == VIDEO_TAG and tag.is_media_frame)
    messages = [record.getMessage() for record in caplog.records]

    assert timeline_problems(timeline) == []
    assert final.count("#EXT-X-DISCONTINUITY") == 1
    assert len([m for m in messages if "audio goes on" in m]) == 1, messages
    assert any("video lags the audio by 2." in m for m in messages), messages
    assert "0 late frames dropped" in " ".join(messages)
    listed = 0
    with av.open(str(directory / "source" / "index.m3u8")) as container:
        for packet in container.demux(video=0):
            listed += packet.size > 0
    assert listed == frames


def stalled_flv(tmp_path: Path) -> Path:
    path = tmp_path / "stalled.flv"
    path.write_bytes(write_flv(stalled_tags()))
    return path


@pytest.mark.timeout(120)
async def test_ingest_video_stall_playlist_moves(aiohttp_client, tmp_path) -> None:
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await box.create_stream("stall")

    # ffmpeg would hold the audio back until the video comes again, for up
    # to 10 s (its max_interleave_delta), so it gets 0.1 s here.
    publisher = await start_ffmpeg_push(
        stalled_flv(tmp_path),
        box.rtmp_url(stream["stream_key"]),
        "-max_interleave_delta",
        "100000",
    )
    try:
        path = await wait_for_media_playlist(box, stream["id"])
        started = asyncio.get_running_loop().time()

        # During the stall (3 s to 7.1 s of the feed) the newest segment
        # number goes on rising.
        newest = []
        while asyncio.get_running_loop().time() - started < 8.0:
            playlist = parse_playlist(await get_text(box, path))
            newest.append(playlist.segments[-1].msn if playlist.segments else None)
            await asyncio.sleep(0.5)

        await asyncio.wait_for(publisher.wait(), 30)
    finally:
        await stop(publisher)

    numbers = [number for number in newest if number is not None]
    # 8 s of a feed with 1 s segments: the number rose by at least 6. A
    # packager that waits for the video to cut raised it by 2.
    assert numbers[-1] - numbers[0] >= 6, newest


@pytest.mark.timeout(150)
async def test_ladder_video_stall_gaps_in_rendition(aiohttp_client, tmp_path) -> None:
    # The rendition has no video to encode during the stall, so it lists
    # the source's audio-only segments as gaps, under the same numbers and
    # durations.
    source, rendition, _, followed = await push_through_ladder(
        aiohttp_client, tmp_path, stalled_flv(tmp_path), follow_seconds=12.0
    )
    gaps = set()
    for text in followed:
        playlist = parse_playlist(text)
        gap_uris = set()
        gap_next = False
        for line in text.splitlines():
            if line == "#EXT-X-GAP":
                gap_next = True
            elif line and not line.startswith("#"):
                if gap_next:
                    gap_uris.add(line.split("?")[0])
                gap_next = False
        gaps.update(
            segment.msn
            for segment in playlist.segments
            if segment.uri.split("?")[0] in gap_uris
        )

    # The 4.1 s stall, in segments of at most 1 s, and the segment up to
    # the next keyframe, which the rendition's decoder needs after it.
    assert len(gaps) >= 4, sorted(gaps)
    assert segment_lines(rendition) == segment_lines(source)
