"""Low-latency HLS: parts, preload hints, blocking reload and rendition reports.

The packager tests feed real FLV tags (libx264 with B-frames, FFmpeg AAC)
one at a time and check every playlist version against RFC 8216bis. The
end-to-end tests run a box with a live RTMP push from tests/publisher.py
and follow the parts as a low-latency player does.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest
from flvfile import AUDIO_TAG, VIDEO_TAG, FlvTag, encode_flv, read_tags

from realcast_box.hls import fmp4, playback
from realcast_box.hls.output import RenditionFiles, VariantSource
from realcast_box.hls.playlist import (
    LowLatency,
    PartEntry,
    RenditionReport,
    SegmentEntry,
    SkipRequest,
    media_playlist,
)
from realcast_box.hls.segmenter import Segmenter
from realcast_box.media.codecs import parse_avc_config
from realcast_box.media.flv import parse_audio_tag, parse_video_tag
from tests.box import Box, start_box, start_publisher
from tests.hls_helpers import (
    create_app_and_stream,
    issue_token,
    playlist_uris,
    query_value,
)
from tests.llhls_check import (
    Part,
    Playlist,
    check_playlist,
    constant_tags,
    merge_delta_update,
    normalized_playlist,
    parse_playlist,
    part_keyframes,
)
from tests.test_transcode_e2e import create_ladder_stream

PART_TARGET = 0.333


def feed_tag(segmenter: Segmenter, tag: FlvTag) -> None:
    if tag.kind == VIDEO_TAG:
        segmenter.add_video(tag.timestamp, parse_video_tag(tag.payload))
    elif tag.kind == AUDIO_TAG:
        segmenter.add_audio(tag.timestamp, parse_audio_tag(tag.payload))


@dataclass
class Packaged:
    versions: list[str]  # each version of the media playlist, in order
    parts: dict[tuple[int, int], bytes]  # every part, read when first listed


def package_tag_by_tag(
    directory: Path, tags: list[FlvTag], *, metadata: dict | None = None
) -> Packaged:
    """Feed ``tags`` one at a time and keep each new version of the playlist.

    ``metadata`` is given to the segmenter first, as onMetaData would be.

    The live versions come from the packager's memory, as the /hls routes
    serve them, and the ended one from disk. After each version, checks
    that a segment just completed is the concatenation of its parts.
    """
    segmenter = Segmenter(
        directory, target_duration=1.0, part_duration=PART_TARGET, window=100
    )
    if metadata is not None:
        segmenter.set_metadata(metadata)
    playlist_path = directory / "source" / "index.m3u8"
    files = segmenter.files
    versions: list[str] = []
    parts: dict[tuple[int, int], bytes] = {}
    for tag in tags:
        feed_tag(segmenter, tag)
        live = files.live_playlist()
        if live is None:
            continue
        text = live.decode()
        if versions and versions[-1] == text:
            continue
        versions.append(text)
        for part in parse_playlist(text).parts:
            if part.position not in parts:
                data = files.live_part(part.uri)
                assert data is not None, part.uri
                parts[part.position] = data
        newest = parse_playlist(text).segments[-1:]
        for segment in newest:
            if segment.parts:
                joined = b"".join(files.live_part(part.uri) for part in segment.parts)
                assert (directory / "source" / segment.uri).read_bytes() == joined
    segmenter.finish()
    versions.append(playlist_path.read_text())
    for part in parse_playlist(versions[-1]).parts:
        if part.position not in parts:
            parts[part.position] = (directory / "source" / part.uri).read_bytes()
    return Packaged(versions, parts)


@pytest.fixture(scope="module")
def av_tags() -> list[FlvTag]:
    """6 s of 30 fps High profile with B-frames, GOP 1 s, 44.1 kHz AAC."""
    return read_tags(
        encode_flv(seconds=6, gop=30, bframes=2, profile="high", preset="veryfast")
    )


@pytest.fixture(scope="module")
def av_output(
    tmp_path_factory: pytest.TempPathFactory, av_tags: list[FlvTag]
) -> tuple[Path, Packaged]:
    directory = tmp_path_factory.mktemp("llhls") / "stream"
    return directory, package_tag_by_tag(directory, av_tags)


# Playlists written by the packager.


def test_llhls_every_playlist_version_valid(av_output) -> None:
    _, packaged = av_output
    versions = packaged.versions

    assert len(versions) > 10
    for text in versions:
        check_playlist(text)


def test_llhls_part_target_never_changes(av_output) -> None:
    _, packaged = av_output
    versions = packaged.versions
    playlists = [parse_playlist(text) for text in versions]

    assert {constant_tags(playlist) for playlist in playlists} == {
        constant_tags(playlists[0])
    }
    assert playlists[0].part_target == PART_TARGET


def test_llhls_first_playlist_has_parts_only(av_output) -> None:
    _, packaged = av_output
    versions = packaged.versions
    first = parse_playlist(versions[0])

    assert first.segments == []
    assert len(first.open_parts) == 1
    assert first.map_uri == "init-0.mp4"


def test_llhls_independent_flags_match_keyframes(av_output) -> None:
    directory, packaged = av_output
    versions = packaged.versions
    checked = 0
    for text in versions[:-1]:
        for part in parse_playlist(text).parts:
            path = directory / "source" / part.uri
            if not path.exists():
                continue  # removed after it left the playlist
            keyframes = part_keyframes(path.read_bytes())
            assert keyframes, f"{part.uri} has no video"
            assert part.independent == keyframes[0], part.uri
            checked += 1

    assert checked > 10


def test_llhls_parts_decode_in_order(av_output, av_tags, tmp_path) -> None:
    directory, packaged = av_output
    data = (directory / "source" / "init-0.mp4").read_bytes()
    data += b"".join(packaged.parts[key] for key in sorted(packaged.parts))
    (tmp_path / "all.mp4").write_bytes(data)

    with av.open(str(tmp_path / "all.mp4")) as container:
        frames = [
            frame.pts
            for packet in container.demux(video=0)
            for frame in packet.decode()
        ]

    pushed = sum(1 for tag in av_tags if tag.kind == VIDEO_TAG and tag.is_media_frame)
    assert len(frames) == pushed
    assert frames == sorted(frames)


def test_llhls_only_newest_segments_keep_parts(av_output) -> None:
    _, packaged = av_output
    versions = packaged.versions
    final = parse_playlist(versions[-1])

    assert len(final.segments) >= 5
    assert [bool(s.parts) for s in final.segments][:-2] == [False] * (
        len(final.segments) - 2
    )
    assert all(segment.parts for segment in final.segments[-2:])


def test_llhls_ended_parts_written(av_output) -> None:
    directory, packaged = av_output
    versions = packaged.versions
    final = parse_playlist(versions[-1])
    on_disk = {path.name for path in (directory / "source").glob("part-*.m4s")}
    listed_segments = {segment.msn for segment in final.segments}

    assert (directory / "source" / final.segments[0].uri).exists()
    # The ended playlist's parts were written out, and those of segments
    # whose parts left it lately (test_hls_window checks how lately).
    assert {part.uri for part in final.parts} <= on_disk
    assert {int(name.split("-")[1].split(".")[0]) for name in on_disk} <= (
        listed_segments
    )


def test_llhls_audio_only_parts(tmp_path) -> None:
    tags = read_tags(encode_flv(seconds=3, video=False, sample_rate=48000))
    versions = package_tag_by_tag(tmp_path / "stream", tags).versions

    for text in versions:
        playlist = check_playlist(text)
        assert all(part.independent for part in playlist.parts)
    assert parse_playlist(versions[-1]).ended


def test_llhls_multivariant_at_first_part(tmp_path, av_tags) -> None:
    directory = tmp_path / "stream"
    segmenter = Segmenter(directory, target_duration=1.0, part_duration=PART_TARGET)
    for tag in av_tags:
        feed_tag(segmenter, tag)
        if segmenter.files.live_playlist() is not None:
            break
    media = parse_playlist(segmenter.files.live_playlist().decode())
    multivariant = (directory / "index.m3u8").read_text()
    on_disk = (directory / "source" / "index.m3u8").exists()
    segmenter.finish()

    assert media.segments == []
    # The file on disk is the regular HLS playlist: none before a segment.
    assert not on_disk
    assert len(media.open_parts) == 1
    assert "source/index.m3u8" in multivariant.splitlines()
    bandwidth = re.search(r"BANDWIDTH=([0-9]+)", multivariant)
    assert bandwidth is not None
    assert int(bandwidth.group(1)) > 0


def test_llhls_first_bandwidth_ignores_audio_rate(tmp_path, av_tags) -> None:
    # ffmpeg with x264 in CRF mode sends videodatarate 0 and an audio rate.
    # The first BANDWIDTH comes from the first part then, not from the audio.
    directory = tmp_path / "stream"
    segmenter = Segmenter(directory, target_duration=1.0, part_duration=PART_TARGET)
    segmenter.set_metadata(
        {"videocodecid": 7, "audiocodecid": 10, "videodatarate": 0, "audiodatarate": 64}
    )
    for tag in av_tags:
        feed_tag(segmenter, tag)
        if segmenter.files.live_playlist() is not None:
            break
    open_bitrate = segmenter.files.multivariant.rendition("source")._open_bitrate()
    multivariant = (directory / "index.m3u8").read_text()
    segmenter.finish()

    bandwidth = re.search(r"BANDWIDTH=([0-9]+)", multivariant)
    assert bandwidth is not None
    assert int(bandwidth.group(1)) > 64_000 * 1.1
    assert int(bandwidth.group(1)) >= open_bitrate


def test_llhls_audio_only_takes_audio_rate(tmp_path) -> None:
    tags = read_tags(encode_flv(seconds=3, video=False, sample_rate=48000))
    directory = tmp_path / "stream"
    segmenter = Segmenter(directory, target_duration=1.0, part_duration=PART_TARGET)
    segmenter.set_metadata({"audiocodecid": 10, "audiodatarate": 96})
    for tag in tags:
        feed_tag(segmenter, tag)
        if segmenter.files.live_playlist() is not None:
            break
    multivariant = (directory / "index.m3u8").read_text()
    segmenter.finish()

    bandwidth = re.search(r"BANDWIDTH=([0-9]+)", multivariant)
    assert bandwidth is not None
    assert int(bandwidth.group(1)) >= 96_000


def test_llhls_off_multivariant_at_first_segment(tmp_path, av_tags) -> None:
    directory = tmp_path / "stream"
    segmenter = Segmenter(directory, target_duration=1.0)
    media_path = directory / "source" / "index.m3u8"
    for tag in av_tags:
        feed_tag(segmenter, tag)
        if media_path.exists() or (directory / "index.m3u8").exists():
            break
    media = parse_playlist(media_path.read_text())
    segmenter.finish()

    assert len(media.segments) == 1
    assert (directory / "index.m3u8").exists()


def test_llhls_long_gop_keeps_target_duration(tmp_path) -> None:
    # Keyframes every 2.5 s against a 1 s target: segments end at the target
    # duration without a keyframe, so no tag of the session changes.
    tags = read_tags(encode_flv(seconds=6, fps=30, gop=75))
    versions = package_tag_by_tag(tmp_path / "stream", tags).versions
    playlists = [check_playlist(text) for text in versions]
    last = playlists[-1]

    assert {constant_tags(playlist) for playlist in playlists} == {
        constant_tags(playlists[0])
    }
    assert last.target_duration == 1
    assert "HOLD-BACK=3.000," in last.tags["#EXT-X-SERVER-CONTROL"]
    assert len(last.segments) >= 5
    assert all(round(segment.duration) <= 1 for segment in last.segments)
    mid_gop_versions = 0
    for text, playlist in zip(versions, playlists, strict=True):
        mid_gop = any(
            segment.parts and not segment.parts[0].independent
            for segment in playlist.segments
        )
        if mid_gop:
            mid_gop_versions += 1
            assert "#EXT-X-INDEPENDENT-SEGMENTS" not in text
    assert mid_gop_versions > 0


def test_llhls_off_writes_regular_playlist(tmp_path, av_tags) -> None:
    segmenter = Segmenter(tmp_path / "stream")
    for tag in av_tags:
        feed_tag(segmenter, tag)
    segmenter.finish()
    text = (tmp_path / "stream" / "source" / "index.m3u8").read_text()

    assert "#EXT-X-PART" not in text
    assert "#EXT-X-SERVER-CONTROL" not in text
    assert not list((tmp_path / "stream" / "source").glob("part-*"))


def test_llhls_playlist_tag_order() -> None:
    part = PartEntry("part-7.0.m4s", 0.3, True)
    text = media_playlist(
        [SegmentEntry("seg-7.m4s", 0.3, "init-0.mp4", parts=(part,))],
        target_duration=2,
        media_sequence=7,
        low_latency=LowLatency(
            part_target=0.333,
            part_hold_back=1.0,
            open_segment=SegmentEntry(
                "seg-8.m4s",
                0.0,
                "init-0.mp4",
                parts=(PartEntry("part-8.0.m4s", 0.3, True),),
            ),
            preload_hint="part-8.1.m4s",
            rendition_reports=[RenditionReport("../low/index.m3u8", 8, 0)],
        ),
    )
    lines = text.splitlines()

    assert lines[3] == (
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,HOLD-BACK=6.000,PART-HOLD-BACK=1.000"
    )
    assert lines[4] == "#EXT-X-PART-INF:PART-TARGET=0.33300"
    assert lines[-6:] == [
        '#EXT-X-PART:DURATION=0.30000,URI="part-7.0.m4s",INDEPENDENT=YES',
        "#EXTINF:0.300,",
        "seg-7.m4s",
        '#EXT-X-PART:DURATION=0.30000,URI="part-8.0.m4s",INDEPENDENT=YES',
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-8.1.m4s"',
        '#EXT-X-RENDITION-REPORT:URI="../low/index.m3u8",LAST-MSN=8,LAST-PART=0',
    ]


# Waiting for parts, without a server.


def low_latency_files(
    directory: Path,
    first_sequence: int,
    *,
    window: int = 6,
    part_duration: float = PART_TARGET,
) -> RenditionFiles:
    """Return a low-latency rendition ``source`` with 2 s segments in ``directory``."""
    return RenditionFiles(
        directory,
        "source",
        target_duration=2.0,
        window=window,
        first_sequence=first_sequence,
        log_name="test",
        part_duration=part_duration,
    )


def video_fragment(av_tags: list[FlvTag]) -> tuple[fmp4.Track, fmp4.Fragment]:
    header = next(t for t in av_tags if t.kind == VIDEO_TAG and t.is_sequence_header)
    frame = next(t for t in av_tags if t.kind == VIDEO_TAG and t.is_media_frame)
    track = fmp4.Track(1, 90000, parse_avc_config(parse_video_tag(header.payload).data))
    sample = fmp4.Sample(parse_video_tag(frame.payload).data, 3000, True)
    return track, fmp4.Fragment(track, 0, [sample])


def test_llhls_ended_segment_writes_out_parts(tmp_path, av_tags) -> None:
    # The last segment can end the playlist itself (write_segment with
    # ended=True): its parts go to disk with the ended playlist and leave
    # memory.
    files = low_latency_files(tmp_path, first_sequence=10)
    track, fragment = video_fragment(av_tags)
    files.write_init([track])
    written = datetime(2026, 1, 1, tzinfo=UTC)
    files.write_part([fragment], discontinuity=False, program_date_time=written)
    in_memory = files.live_part("part-10.0.m4s")
    source = VariantSource(track.config, None, None, 30.0)
    files.write_segment(
        [fragment],
        discontinuity=False,
        program_date_time=written,
        variant=source,
        ended=True,
    )
    text = (tmp_path / "source" / "index.m3u8").read_text()

    assert in_memory is not None
    assert files.live_part("part-10.0.m4s") is None
    assert files.live_playlist() is None
    assert "#EXT-X-ENDLIST" in text
    assert 'URI="part-10.1.m4s"' in text
    assert (tmp_path / "source" / "part-10.0.m4s").read_bytes() == in_memory
    assert (tmp_path / "source" / "part-10.1.m4s").exists()


def write_two_second_segments(
    files: RenditionFiles, av_tags: list[FlvTag], count: int
) -> None:
    """Write ``count`` segments of two 1 s parts, each part one video frame."""
    track, fragment = video_fragment(av_tags)
    long_sample = replace(fragment.samples[0], duration=90000)
    fragment = replace(fragment, samples=[long_sample])
    source = VariantSource(track.config, None, None, 30.0)
    files.write_init([track])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for number in range(count):
        written = start + timedelta(seconds=2 * number)
        files.write_part([fragment], discontinuity=False, program_date_time=written)
        files.write_segment(
            [fragment], discontinuity=False, program_date_time=written, variant=source
        )
    files.write_part(
        [fragment],
        discontinuity=False,
        program_date_time=start + timedelta(seconds=2 * count),
    )


def test_llhls_delta_update_long_window(tmp_path, av_tags) -> None:
    files = low_latency_files(tmp_path, 100, window=20, part_duration=1.0)
    write_two_second_segments(files, av_tags, 25)
    full = files.live_playlist()
    delta = files.live_playlist(SkipRequest.SEGMENTS)
    assert full is not None
    assert delta is not None
    whole = check_playlist(full.decode())
    update = check_playlist(delta.decode())

    assert files.skip_boundary == 12.0
    assert float(whole.server_control["CAN-SKIP-UNTIL"]) >= 6 * whole.target_duration
    assert whole.skipped == 0
    assert len(whole.segments) == 20
    # 20 segments of 2 s: the oldest 14 have at least 12 s after them.
    assert update.skipped == 14
    assert [s.msn for s in update.segments] == [s.msn for s in whole.segments[14:]]
    assert [s.uri for s in update.segments] == [s.uri for s in whole.segments[14:]]
    assert update.media_sequence == whole.media_sequence
    assert update.open_msn == whole.open_msn
    assert update.preload_hint == whole.preload_hint
    assert update.map_uri == whole.map_uri
    assert delta.decode().splitlines()[1] == "#EXT-X-VERSION:9"


def test_llhls_delta_update_cached_separately(tmp_path, av_tags) -> None:
    files = low_latency_files(tmp_path, 100, window=20, part_duration=1.0)
    write_two_second_segments(files, av_tags, 25)

    delta = files.live_playlist(SkipRequest.SEGMENTS)
    full = files.live_playlist()
    daterange_delta = files.live_playlist(SkipRequest.SEGMENTS_AND_DATERANGES)

    assert delta is not None
    assert full is not None
    assert daterange_delta is not None
    assert b"#EXT-X-SKIP" in delta
    assert b"#EXT-X-SKIP" not in full
    assert b"RECENTLY-REMOVED-DATERANGES" in daterange_delta
    assert b"RECENTLY-REMOVED-DATERANGES" not in delta
    assert files.live_playlist(SkipRequest.SEGMENTS) is delta
    assert files.live_playlist() is full


def test_llhls_default_window_no_skip(tmp_path, av_tags) -> None:
    # hls_window defaults to 6 segments, and none of them is ever 6 target
    # durations from the end, so the playlist offers no delta updates.
    files = low_latency_files(tmp_path, 100, part_duration=1.0)
    write_two_second_segments(files, av_tags, 10)
    full = files.live_playlist()
    requested = files.live_playlist(SkipRequest.SEGMENTS)
    assert full is not None

    assert files.skip_boundary is None
    assert "CAN-SKIP-UNTIL" not in check_playlist(full.decode()).server_control
    assert requested == full


def test_llhls_ended_playlist_ignores_skip(tmp_path, av_tags) -> None:
    files = low_latency_files(tmp_path, 100, window=20, part_duration=1.0)
    write_two_second_segments(files, av_tags, 25)
    files.end()

    assert files.live_playlist(SkipRequest.SEGMENTS) is None
    assert "#EXT-X-SKIP" not in (tmp_path / "source" / "index.m3u8").read_text()


async def test_llhls_waiters_share_one_future(tmp_path, av_tags) -> None:
    files = low_latency_files(tmp_path, first_sequence=10)
    track, fragment = video_fragment(av_tags)
    files.write_init([track])
    waiters = [
        asyncio.create_task(files.wait_for_part(10, 0, timeout=60)) for _ in range(1000)
    ]
    await asyncio.sleep(0)

    assert len(files._waiters) == 1
    assert not any(waiter.done() for waiter in waiters)

    files.write_part(
        [fragment],
        discontinuity=False,
        program_date_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    results = await asyncio.gather(*waiters)

    assert results == [True] * 1000
    assert files._waiters == {}
    assert files.live_part("part-10.0.m4s") is not None
    assert not (tmp_path / "source" / "part-10.0.m4s").exists()


async def test_llhls_wait_times_out(tmp_path) -> None:
    files = low_latency_files(tmp_path, first_sequence=0)

    assert await files.wait_for_part(0, 0, timeout=0.01) is False


def test_llhls_directive_limits(tmp_path, av_tags) -> None:
    files = low_latency_files(tmp_path, first_sequence=100)
    track, fragment = video_fragment(av_tags)
    files.write_init([track])
    files.write_part(
        [fragment],
        discontinuity=False,
        program_date_time=datetime(2026, 1, 1, tzinfo=UTC),
    )

    assert files.check_delivery_directive(102, None) is None
    assert "at most 2 segments ahead" in (
        files.check_delivery_directive(103, None) or ""
    )
    # The Advance Part Limit is 3 s of parts: ceil(3 / 0.333) = 10.
    assert files.check_delivery_directive(100, 10) is None
    assert "at most 10 parts ahead" in (files.check_delivery_directive(100, 11) or "")
    # Part K of a later segment is at least K + 1 parts ahead, plus one part
    # for each segment between.
    assert files.check_delivery_directive(101, 9) is None
    assert "more than 10 parts past" in (files.check_delivery_directive(101, 10) or "")
    assert files.check_delivery_directive(102, 8) is None
    assert "more than 10 parts past" in (files.check_delivery_directive(102, 9) or "")
    assert "at most 1000" in (files.check_delivery_directive(101, 5000) or "")


def test_llhls_signature_added_to_part_uris() -> None:
    text = (
        '#EXT-X-PART:DURATION=0.30000,URI="part-7.0.m4s",INDEPENDENT=YES\n'
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-7.1.m4s"\n'
        '#EXT-X-RENDITION-REPORT:URI="../low/index.m3u8",LAST-MSN=7,LAST-PART=0\n'
    )

    rewritten = playback.add_query_to_uris(text, "session", "abc")

    assert rewritten.splitlines() == [
        '#EXT-X-PART:DURATION=0.30000,URI="part-7.0.m4s?session=abc",INDEPENDENT=YES',
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-7.1.m4s?session=abc"',
        '#EXT-X-RENDITION-REPORT:URI="../low/index.m3u8?session=abc",LAST-MSN=7,'
        "LAST-PART=0",
    ]


# A box with a live RTMP push.

LIVE_SETTINGS = {"hls_segment_duration": 1.0}


def with_query(path: str, **parameters: object) -> str:
    separator = "&" if "?" in path else "?"
    return path + separator + "&".join(f"{k}={v}" for k, v in parameters.items())


async def get_text(box: Box, path: str) -> str:
    response = await box.client.get(path)
    assert response.status == 200, f"{path}: {response.status} {await response.text()}"
    return await response.text()


async def wait_for_media_playlist(
    box: Box, stream_id: str, query: str = "", timeout: float = 30.0
) -> str:
    """Wait for the multivariant playlist; return its first media playlist's path."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await box.client.get(f"/hls/{stream_id}/index.m3u8{query}")
        if response.status == 200:
            return f"/hls/{stream_id}/{playlist_uris(await response.text())[0]}"
        assert asyncio.get_running_loop().time() < deadline, "no HLS output"
        await asyncio.sleep(0.1)


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


def part_end(playlist: Playlist, part: Part) -> datetime:
    """Return the wall-clock time at which ``part``'s media ends."""
    msn, index = part.position
    segment = playlist.segment(msn)
    if segment is not None:
        start, parts = segment.program_date_time, segment.parts
    else:
        start, parts = playlist.open_date_time, playlist.open_parts
    assert start is not None
    seconds = sum(p.duration for p in parts if p.position[1] <= index)
    return start + timedelta(seconds=seconds)


@dataclass
class Followed:
    parts: list[bytes]
    blocked: int  # requests sent before their part existed
    # Wall-clock arrival of each part, and the end of its media on the
    # box's timeline (seconds since the first keyframe).
    arrivals: list[tuple[float, float]]


async def follow_parts(box: Box, media_path: str, stream_id: str, count: int):
    """Follow the newest parts as a low-latency player does, ``count`` steps.

    Each step sends the blocking playlist request for the next part together
    with a request for the hinted part, and checks both responses.
    """
    base = media_path.split("?")[0].rsplit("/", 1)[0]
    live = box.hub.live_rendition(stream_id, base.rsplit("/", 1)[1])
    assert live is not None
    playlist = check_playlist(await get_text(box, media_path))
    init = await read_body(box, f"{base}/{playlist.map_uri}")
    followed = Followed([init], 0, [])
    msn, index = playlist.open_msn, 0
    for _ in range(count):
        existed = live.part_available(msn, index)
        hint = playlist.preload_hint or {}
        hinted = Part(hint.get("URI", "part-0.0.m4s"), 0.0, False)
        requests = [
            box.client.get(with_query(media_path, _HLS_msn=msn, _HLS_part=index))
        ]
        if hinted.position == (msn, index):
            requests.append(box.client.get(f"{base}/{hinted.uri}"))
        responses = await asyncio.gather(*requests)
        arrived = time.time()
        assert responses[0].status == 200, await responses[0].text()
        playlist = check_playlist(await responses[0].text())
        part = playlist.part(msn, index)
        if part is None:
            # Segment msn ended with fewer parts: the request meant part 0 of
            # the next segment, which the playlist now lists.
            assert playlist.segment(msn) is not None
            if len(responses) > 1:
                assert responses[1].status == 404
            msn, index = msn + 1, 0
            part = playlist.part(msn, index)
            assert part is not None
            data = await read_body(box, f"{base}/{part.uri}")
        elif len(responses) > 1:
            assert responses[1].status == 200
            data = await responses[1].read()
        else:
            data = await read_body(box, f"{base}/{part.uri}")
        assert data == await read_body(box, f"{base}/{part.uri}")
        followed.parts.append(data)
        followed.blocked += not existed
        origin = box.hub.publication(stream_id).segmenter.wall_time(0.0)
        media_end = (part_end(playlist, part) - origin).total_seconds()
        followed.arrivals.append((arrived, media_end))
        index += 1
    return followed


async def read_body(box: Box, path: str) -> bytes:
    response = await box.client.get(path)
    assert response.status == 200, f"{path}: {response.status}"
    return await response.read()


@pytest.mark.timeout(120)
async def test_llhls_client_follows_live_push(aiohttp_client, tmp_path) -> None:
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await box.create_stream()
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]),
        *("--seconds", "10", "--realtime", "--print-start"),
    )
    try:
        line = await asyncio.wait_for(publisher.stdout.readline(), 30)
        sent_start = float(line.split()[1])
        media_path = await wait_for_media_playlist(box, stream["id"])
        followed = await follow_parts(box, media_path, stream["id"], count=12)
    finally:
        await stop(publisher)
    # The publisher sends frame N at sent_start + N / fps, and its first
    # frame, a keyframe, is media time 0 on the box's timeline.
    lags = [arrived - (sent_start + end) for arrived, end in followed.arrivals]
    (tmp_path / "parts.mp4").write_bytes(b"".join(followed.parts))
    with av.open(str(tmp_path / "parts.mp4")) as container:
        times = [
            frame.pts
            for packet in container.demux(video=0)
            for frame in packet.decode()
        ]
    samples = sum(len(part_keyframes(data)) for data in followed.parts[1:])
    print(
        f"live-edge lag of {len(lags)} parts on loopback: median "
        f"{statistics.median(lags):.3f} s, max {max(lags):.3f} s"
    )

    assert followed.blocked >= 1
    assert part_keyframes(followed.parts[1])[0]
    assert len(times) == samples
    assert times == sorted(times)


@pytest.mark.timeout(120)
async def test_llhls_directive_errors(aiohttp_client, tmp_path) -> None:
    box = await start_box(
        aiohttp_client, tmp_path, reconnect_window_seconds=30, **LIVE_SETTINGS
    )
    stream = await box.create_stream()
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        media_path = await wait_for_media_playlist(box, stream["id"])
        assert "?session=" in media_path
        playlist = check_playlist(await get_text(box, media_path))
        bad_queries = [
            "_HLS_msn=abc",
            "_HLS_msn=-1",
            "_HLS_msn=1.5",
            "_HLS_msn=",
            "_HLS_msn=18446744073709551616",
            "_HLS_part=0",
            f"_HLS_msn={playlist.open_msn}&_HLS_part=x",
            f"_HLS_msn={playlist.open_msn}&_HLS_part=5000",
            f"_HLS_msn={playlist.open_msn + 10}",
        ]
        for query in bad_queries:
            response = await box.client.get(f"{media_path}&{query}")
            body = await response.json()
            assert response.status == 400, query
            assert body["status_code"] == 400, query
            assert "_HLS_" in body["detail"], query
    finally:
        # Killed, the publisher drops its connection without unpublishing,
        # so the session waits for it and its playlist stays live.
        await stop(publisher)
    await box.wait_for_status(stream["id"], "reconnecting")
    playlist = check_playlist(await get_text(box, media_path))

    response = await box.client.get(
        with_query(media_path, _HLS_msn=playlist.open_msn, _HLS_part=0)
    )
    body = await response.json()

    assert response.status == 503
    assert body["status_code"] == 503
    assert "was not written within 3 s" in body["detail"]


async def start_signed_push(
    aiohttp_client, tmp_path
) -> tuple[Box, dict, asyncio.subprocess.Process, str]:
    """Push 8 s to a new signed stream; return it and its media playlist path.

    The path carries the session signature from a playlist opened with a
    playback token. The caller stops the publisher.
    """
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await create_app_and_stream(
        box, stream_settings={"playback_policy": "signed"}
    )
    token = (await issue_token(box, stream["id"]))["playback_token"]
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "8", "--realtime"
    )
    try:
        media_path = await wait_for_media_playlist(
            box, stream["id"], query=f"?token={token}"
        )
    except BaseException:
        await stop(publisher)
        raise
    return box, stream, publisher, media_path


@pytest.mark.timeout(120)
async def test_llhls_signed_stream_parts(aiohttp_client, tmp_path) -> None:
    box, stream, publisher, media_path = await start_signed_push(
        aiohttp_client, tmp_path
    )
    try:
        playlist = check_playlist(await get_text(box, media_path))
        base = media_path.split("?")[0].rsplit("/", 1)[0]
        hint = playlist.preload_hint["URI"]
        blocking = with_query(
            media_path, _HLS_msn=playlist.open_msn, _HLS_part=len(playlist.open_parts)
        )
        hinted_response, blocked_text = await asyncio.gather(
            box.client.get(f"{base}/{hint}"), get_text(box, blocking)
        )
        blocked = check_playlist(blocked_text)
        unsigned = await box.client.get(f"{base}/{blocked.parts[-1].name}")
        followed = await follow_parts(box, media_path, stream["id"], count=3)
    finally:
        await stop(publisher)

    assert query_value(hint, "session")
    assert hinted_response.status == 200
    assert all(query_value(part.uri, "session") for part in blocked.parts)
    assert query_value(blocked.preload_hint["URI"], "session")
    assert unsigned.status == 401
    assert len(followed.parts) == 4


async def test_llhls_blocked_reload_revoked(aiohttp_client, tmp_path) -> None:
    # A blocked reload checks access again once its part is there, so a
    # revocation during the wait gets a 403 rather than the playlist.
    box, stream, publisher, media_path = await start_signed_push(
        aiohttp_client, tmp_path
    )
    try:
        playlist = check_playlist(await get_text(box, media_path))
        # The first part of the segment after next: at least a segment away.
        blocking = with_query(media_path, _HLS_msn=playlist.open_msn + 2, _HLS_part=0)
        waiting = asyncio.ensure_future(box.client.get(blocking))
        await asyncio.sleep(0.2)
        still_waiting = not waiting.done()
        revoked = await box.client.post(
            f"/api/streams/{stream['id']}/playback-token/revoke", headers=box.auth
        )
        response = await waiting
        body = await response.json()
    finally:
        await stop(publisher)

    assert still_waiting
    assert revoked.status == 200
    assert response.status == 403
    assert "revoked" in body["detail"]


@pytest.mark.timeout(180)
async def test_llhls_transcoded_rendition(aiohttp_client, tmp_path) -> None:
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await create_ladder_stream(
        box, [{"name": "low", "width": 160, "height": 120, "bitrate": 150, "fps": 25}]
    )
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "10", "--realtime"
    )
    try:
        source_path = await wait_for_media_playlist(box, stream["id"])
        multivariant = await get_text(box, f"/hls/{stream['id']}/index.m3u8")
        rendition_uri = playlist_uris(multivariant)[1]
        rendition_path = f"/hls/{stream['id']}/{rendition_uri}"
        followed = await follow_parts(box, rendition_path, stream["id"], count=4)
        source = check_playlist(await get_text(box, source_path))
        rendition = check_playlist(await get_text(box, rendition_path))
    finally:
        await stop(publisher)
    source_name = source_path.split("/")[3]
    rendition_name = rendition_uri.split("/")[0]

    source_reports = [r["URI"].split("?")[0] for r in source.reports]
    rendition_reports = [r["URI"].split("?")[0] for r in rendition.reports]

    assert source_reports == [f"../{rendition_name}/index.m3u8"]
    assert rendition_reports == [f"../{source_name}/index.m3u8"]
    # Reports carry the viewer's session signature, as every other URI does.
    assert query_value(source.reports[0]["URI"], "session")
    assert rendition.part_target == source.part_target
    assert part_keyframes(followed.parts[1])[0]


# 10 segments of 1 s: CAN-SKIP-UNTIL is 6 s, so the oldest segments of a
# full window lie beyond it.
DELTA_SETTINGS = {"hls_segment_duration": 1.0, "hls_window": 10}
SESSION_QUERY = re.compile(r"\?session=[^\"\s]*")


async def wait_for_segments(box: Box, media_path: str, count: int) -> Playlist:
    """Reload the media playlist until it lists ``count`` complete segments."""
    for _ in range(600):
        playlist = check_playlist(await get_text(box, media_path))
        if len(playlist.segments) >= count:
            return playlist
        await asyncio.sleep(0.05)
    raise AssertionError(f"{media_path} listed fewer than {count} segments")


def without_session(text: str) -> str:
    """Drop the session signatures, which change once a second at most."""
    return SESSION_QUERY.sub("", text)


async def get_delta_after_part(box: Box, path: str, playlist: Playlist) -> Playlist:
    """Request the delta update that lists the part after ``playlist``'s newest."""
    msn, index = playlist.open_msn, len(playlist.open_parts)
    text = await get_text(
        box, with_query(path, _HLS_msn=msn, _HLS_part=index, _HLS_skip="YES")
    )
    update = check_playlist(text)
    assert update.skipped >= 1, text
    assert update.part(msn, index) is not None or update.open_msn > msn, text
    return update


@pytest.mark.timeout(120)
async def test_llhls_delta_update_live_push(aiohttp_client, tmp_path) -> None:
    box = await start_box(
        aiohttp_client, tmp_path, reconnect_window_seconds=30, **DELTA_SETTINGS
    )
    stream = await box.create_stream()
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "40", "--realtime"
    )
    try:
        media_path = await wait_for_media_playlist(box, stream["id"])
        live = await wait_for_segments(box, media_path, 10)
        # A blocking reload that also requests the delta update.
        blocked = await get_delta_after_part(box, media_path, live)
        bad_responses = {
            value: await box.client.get(f"{media_path}&_HLS_skip={value}")
            for value in ["yes", "NO", "v3", "", "YES,v2"]
        }
        bad_bodies = {
            value: await response.json() for value, response in bad_responses.items()
        }
    finally:
        # Killed, the publisher leaves the session waiting for it, so the
        # playlist stays live and no longer changes.
        await stop(publisher)
    await box.wait_for_status(stream["id"], "reconnecting")
    delta = await get_text(box, f"{media_path}&_HLS_skip=YES")
    full = await get_text(box, media_path)
    daterange_delta = await get_text(box, f"{media_path}&_HLS_skip=v2")
    full_again = await get_text(box, media_path)
    update = check_playlist(delta)

    assert "CAN-SKIP-UNTIL=6.000" in full
    assert blocked.media_sequence >= live.media_sequence
    for value, response in bad_responses.items():
        assert response.status == 400, value
        assert bad_bodies[value]["status_code"] == 400, value
        assert "_HLS_skip" in bad_bodies[value]["detail"], value
    # The cached delta update is never served for the whole playlist.
    assert "#EXT-X-SKIP" not in full
    assert without_session(full_again) == without_session(full)
    assert update.skipped >= 3
    assert delta.splitlines()[1] == "#EXT-X-VERSION:9"
    assert merge_delta_update(
        without_session(full), without_session(delta)
    ) == normalized_playlist(without_session(full))
    assert daterange_delta.splitlines()[1] == "#EXT-X-VERSION:10"
    assert 'RECENTLY-REMOVED-DATERANGES=""' in daterange_delta


@pytest.mark.timeout(180)
async def test_llhls_delta_update_signed_ladder(aiohttp_client, tmp_path) -> None:
    box = await start_box(aiohttp_client, tmp_path, **DELTA_SETTINGS)
    stream = await create_ladder_stream(
        box, [{"name": "low", "width": 160, "height": 120, "bitrate": 150, "fps": 25}]
    )
    response = await box.client.put(
        f"/api/apps/{stream['app_id']}",
        json={"settings": {"playback_policy": "signed"}},
        headers=box.auth,
    )
    assert response.status == 200, await response.text()
    token = (await issue_token(box, stream["id"]))["playback_token"]
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "20", "--realtime"
    )
    try:
        source_path = await wait_for_media_playlist(
            box, stream["id"], query=f"?token={token}"
        )
        multivariant = await get_text(
            box, f"/hls/{stream['id']}/index.m3u8?token={token}"
        )
        rendition_path = f"/hls/{stream['id']}/{playlist_uris(multivariant)[1]}"
        updates = {}
        for path in (source_path, rendition_path):
            live = await wait_for_segments(box, path, 10)
            updates[path] = await get_delta_after_part(box, path, live)
        unsigned_path = rendition_path.split("?")[0]
        unsigned = await box.client.get(f"{unsigned_path}?_HLS_skip=YES")
    finally:
        await stop(publisher)
    rendition_update = updates[rendition_path]

    assert rendition_path.split("/")[3].startswith("low-")
    assert query_value(rendition_path, "session")
    for update in updates.values():
        assert all(query_value(s.uri, "session") for s in update.segments)
        assert all(query_value(part.uri, "session") for part in update.parts)
        assert query_value(update.preload_hint["URI"], "session")
        assert query_value(update.map_uri, "session")
    assert [r["URI"].split("?")[0] for r in rendition_update.reports] == [
        f"../{source_path.split('/')[3]}/index.m3u8"
    ]
    assert unsigned.status == 401


@pytest.mark.timeout(120)
async def test_llhls_directive_errors_after_end(aiohttp_client, tmp_path) -> None:
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await box.create_stream()
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "3"
    )
    media_path = await wait_for_media_playlist(box, stream["id"])
    await publisher.communicate()
    await box.wait_for_status(stream["id"], "offline")

    bad = await box.client.get(f"{media_path}&_HLS_msn=abc")
    ended = await box.client.get(f"{media_path}&_HLS_msn=0")
    bad_skip = await box.client.get(f"{media_path}&_HLS_skip=no")
    # An ended playlist is never a delta update.
    ended_skip = await box.client.get(f"{media_path}&_HLS_skip=YES")

    assert bad.status == 400
    assert (await bad.json())["status_code"] == 400
    assert ended.status == 200
    assert "#EXT-X-ENDLIST" in await ended.text()
    assert bad_skip.status == 400
    assert (await bad_skip.json())["status_code"] == 400
    assert ended_skip.status == 200
    assert "#EXT-X-ENDLIST" in await ended_skip.text()
    assert "#EXT-X-SKIP" not in await ended_skip.text()


async def test_llhls_disabled_by_setting(aiohttp_client, tmp_path) -> None:
    box = await start_box(
        aiohttp_client, tmp_path, hls_low_latency=False, **LIVE_SETTINGS
    )
    stream = await box.create_stream()
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        media_path = await wait_for_media_playlist(box, stream["id"])
        text = await get_text(box, media_path)
        # Without low-latency HLS, delivery directives are ignored.
        ignored = await box.client.get(f"{media_path}&_HLS_msn=abc")
        skip_ignored = await box.client.get(f"{media_path}&_HLS_skip=YES")
        bad_skip_ignored = await box.client.get(f"{media_path}&_HLS_skip=no")
    finally:
        await stop(publisher)
    rendition = box.hub.hls_root / stream["id"] / media_path.split("/")[3]

    assert "#EXTINF:" in text
    assert "#EXT-X-PART" not in text
    assert "#EXT-X-SERVER-CONTROL" not in text
    assert "#EXT-X-PRELOAD-HINT" not in text
    assert ignored.status == 200
    assert skip_ignored.status == 200
    assert "#EXT-X-SKIP" not in await skip_ignored.text()
    assert bad_skip_ignored.status == 200
    assert not list(rendition.glob("part-*"))


@pytest.mark.timeout(120)
async def test_llhls_long_gop_publisher(aiohttp_client, tmp_path) -> None:
    # Keyframes every 3 s (75 frames at 25 fps) against 1 s segments.
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await box.create_stream()
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]),
        *("--seconds", "7", "--realtime", "--gop", "75"),
    )
    versions: list[str] = []
    try:
        media_path = await wait_for_media_playlist(box, stream["id"])
        for _ in range(600):
            if publisher.returncode is not None:
                break
            text = await get_text(box, media_path)
            if not versions or versions[-1] != text:
                versions.append(text)
            if len(parse_playlist(text).segments) >= 5:
                break
            await asyncio.sleep(0.05)
    finally:
        await stop(publisher)
    playlists = [check_playlist(text) for text in versions]
    last = playlists[-1]

    assert {constant_tags(playlist) for playlist in playlists} == {
        constant_tags(playlists[0])
    }
    assert last.target_duration == 1
    assert len(last.segments) >= 5
    assert any(
        segment.parts and not segment.parts[0].independent for segment in last.segments
    )
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in versions[-1]
