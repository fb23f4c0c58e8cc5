"""Low-latency HLS: parts, preload hints, blocking reload and rendition reports.

The packager tests feed real FLV tags (libx264 with B-frames, FFmpeg AAC)
one at a time and check every playlist version against RFC 8216bis. The
end-to-end tests run a box with a live RTMP push from tests/publisher.py
and follow the parts as a low-latency player does.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from flvfile import AUDIO_TAG, VIDEO_TAG, FlvTag, encode_flv, read_tags

from realcast_box.hls import fmp4
from realcast_box.hls.output import RenditionFiles, VariantSource
from realcast_box.hls.playlist import (
    LowLatency,
    PartEntry,
    RenditionReport,
    SegmentEntry,
    media_playlist,
)
from realcast_box.hls.segmenter import Segmenter
from realcast_box.media.codecs import parse_avc_config
from realcast_box.media.flv import parse_audio_tag, parse_video_tag
from tests.box import Box, start_box, start_publisher
from tests.hls_helpers import issue_token, playlist_uris, query_value
from tests.llhls_check import (
    Part,
    Playlist,
    check_playlist,
    constant_tags,
    parse_playlist,
    part_keyframes,
)

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


def package_tag_by_tag(directory: Path, tags: list[FlvTag]) -> Packaged:
    """Feed ``tags`` one at a time and keep each new version of the playlist.

    After each version, checks that a segment just completed is the
    concatenation of its part files, while those files are still on disk.
    """
    segmenter = Segmenter(
        directory, target_duration=1.0, part_duration=PART_TARGET, window=100
    )
    playlist_path = directory / "source" / "index.m3u8"
    versions: list[str] = []
    parts: dict[tuple[int, int], bytes] = {}
    for tag in tags:
        feed_tag(segmenter, tag)
        if not playlist_path.exists():
            continue
        text = playlist_path.read_text()
        if versions and versions[-1] == text:
            continue
        versions.append(text)
        for part in parse_playlist(text).parts:
            if part.position not in parts:
                path = directory / "source" / part.uri
                parts[part.position] = path.read_bytes()
        newest = parse_playlist(text).segments[-1:]
        for segment in newest:
            if segment.parts:
                joined = b"".join(
                    (directory / "source" / part.uri).read_bytes()
                    for part in segment.parts
                )
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


def test_llhls_old_part_files_removed(av_output) -> None:
    directory, packaged = av_output
    versions = packaged.versions
    final = parse_playlist(versions[-1])
    oldest = final.segments[0].msn

    assert not list((directory / "source").glob(f"part-{oldest}.*.m4s"))
    assert (directory / "source" / final.segments[0].uri).exists()


def test_llhls_audio_only_parts(tmp_path) -> None:
    tags = read_tags(encode_flv(seconds=3, video=False, sample_rate=48000))
    versions = package_tag_by_tag(tmp_path / "stream", tags).versions

    for text in versions:
        playlist = check_playlist(text)
        assert all(part.independent for part in playlist.parts)
    assert parse_playlist(versions[-1]).ended


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


def video_fragment(av_tags: list[FlvTag]) -> tuple[fmp4.Track, fmp4.Fragment]:
    header = next(t for t in av_tags if t.kind == VIDEO_TAG and t.is_sequence_header)
    frame = next(t for t in av_tags if t.kind == VIDEO_TAG and t.is_media_frame)
    track = fmp4.Track(1, 90000, parse_avc_config(parse_video_tag(header.payload).data))
    sample = fmp4.Sample(parse_video_tag(frame.payload).data, 3000, True)
    return track, fmp4.Fragment(track, 0, [sample])


async def test_llhls_waiters_share_one_future(tmp_path, av_tags) -> None:
    files = RenditionFiles(
        tmp_path,
        "source",
        target_duration=2.0,
        window=6,
        first_sequence=10,
        log_name="test",
        part_duration=PART_TARGET,
    )
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
        variant=VariantSource(None, None, None, None),
    )
    results = await asyncio.gather(*waiters)

    assert results == [True] * 1000
    assert files._waiters == {}
    assert (tmp_path / "source" / "part-10.0.m4s").exists()


async def test_llhls_wait_times_out(tmp_path) -> None:
    files = RenditionFiles(
        tmp_path,
        "source",
        target_duration=2.0,
        window=6,
        first_sequence=0,
        log_name="test",
        part_duration=PART_TARGET,
    )

    assert await files.wait_for_part(0, 0, timeout=0.01) is False
