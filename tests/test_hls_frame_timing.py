"""Low-latency HLS with low and changing frame rates, stalls and transcoding.

The rules checked: no part longer than PART-TARGET, renditions that agree
with the source, no discontinuity for a feed that is slow from its start,
and /metrics counts that match the requests made. The packager tests feed real
FLV tags, and the end-to-end tests run a box with a live push.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from flvfile import VIDEO_TAG, FlvTag, encode_flv, read_tags, write_flv

from realcast_box.hls.segmenter import Segmenter
from tests.box import start_box, start_publisher
from tests.hls_helpers import playlist_uris, signed_stream
from tests.llhls_check import parse_playlist
from tests.test_hls_low_latency import (
    LIVE_SETTINGS,
    PART_TARGET,
    feed_tag,
    get_text,
    package_tag_by_tag,
    stop,
    wait_for_media_playlist,
    with_query,
)
from tests.test_metrics import scrape
from tests.test_transcode_e2e import create_ladder_stream

# Slack for part durations printed with 5 decimals.
DURATION_SLACK = 1e-5
# A transcoded quality of 2 fps: frames of 0.5 s.
SLOW_QUALITY = {"name": "slow", "width": 160, "height": 120, "bitrate": 100, "fps": 2}


def tags_with_gap(tags: list[FlvTag], after_video: int, gap_ms: int) -> list[FlvTag]:
    """Shift every tag after video frame ``after_video`` by ``gap_ms``."""
    video = [tag for tag in tags if tag.kind == VIDEO_TAG]
    at = video[after_video].timestamp
    return [
        replace(tag, timestamp=tag.timestamp + gap_ms) if tag.timestamp > at else tag
        for tag in tags
    ]


async def start_ffmpeg_push(
    path: Path, url: str, *options: str
) -> asyncio.subprocess.Process:
    """Push an FLV file at its own pace (-re), so a timestamp gap is a stall.

    ``options`` go to the output, before its format.
    """
    return await asyncio.create_subprocess_exec(
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-i",
        str(path),
        "-c",
        "copy",
        *options,
        "-f",
        "flv",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def follow_playlists(box, path: str, seconds: float) -> list[str]:
    """Reload ``path`` at each preload hint for ``seconds``; return each text."""
    texts = []
    query = {}
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        response = await box.client.get(with_query(path, **query) if query else path)
        text = await response.text()
        if response.status != 200:
            await asyncio.sleep(0.2)
            continue
        texts.append(text)
        playlist = parse_playlist(text)
        if playlist.ended or playlist.preload_hint is None:
            break
        query = {"_HLS_msn": playlist.open_msn, "_HLS_part": len(playlist.open_parts)}
    return texts


async def wait_for_rendition_path(box, stream_id: str) -> str:
    """Return the path of the first transcoded rendition once the box lists it."""
    multivariant = ""
    for _ in range(100):
        multivariant = await get_text(box, f"/hls/{stream_id}/index.m3u8")
        if len(playlist_uris(multivariant)) > 1:
            break
        await asyncio.sleep(0.1)
    return f"/hls/{stream_id}/{playlist_uris(multivariant)[1]}"


def long_parts(texts: list[str]) -> list[str]:
    problems = []
    for text in texts:
        playlist = parse_playlist(text)
        for part in playlist.parts:
            if part.duration > playlist.part_target + DURATION_SLACK:
                problems.append(
                    f"{part.name}: {part.duration} > PART-TARGET {playlist.part_target}"
                )
    return sorted(set(problems))


@pytest.mark.timeout(120)
async def test_ladder_low_fps_parts_within_target(aiohttp_client, tmp_path) -> None:
    # A quality of 2 fps has frames of 0.5 s, longer than the 0.333 s part
    # target of the 30 fps source, so its own part target must be longer.
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await create_ladder_stream(box, [SLOW_QUALITY])
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "8", "--realtime"
    )
    try:
        await wait_for_media_playlist(box, stream["id"])
        rendition = await wait_for_rendition_path(box, stream["id"])
        texts = await follow_playlists(box, rendition, 6.0)
    finally:
        await stop(publisher)

    assert texts, "no playlist of the 2 fps rendition"
    assert long_parts(texts) == []


@pytest.mark.timeout(120)
async def test_ladder_low_fps_source_part_target(aiohttp_client, tmp_path) -> None:
    # A 2 fps source widens its PART-TARGET to 0.625 s before the first part.
    # Its 2 fps rendition must follow, or each of its parts breaks the target.
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await create_ladder_stream(box, [SLOW_QUALITY])
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]),
        *("--seconds", "10", "--fps", "2", "--gop", "2", "--realtime"),
    )
    try:
        source_path = await wait_for_media_playlist(box, stream["id"])
        rendition = await wait_for_rendition_path(box, stream["id"])
        texts = await follow_playlists(box, rendition, 6.0)
        source = parse_playlist(await get_text(box, source_path))
    finally:
        await stop(publisher)

    assert texts, "no playlist of the 2 fps rendition"
    assert parse_playlist(texts[-1]).part_target == source.part_target
    assert long_parts(texts) == []


def segment_lines(text: str) -> list[str]:
    """Return the EXTINF and EXT-X-DISCONTINUITY lines, in order."""
    return [
        line
        for line in text.splitlines()
        if line.startswith("#EXTINF") or line == "#EXT-X-DISCONTINUITY"
    ]


async def push_through_ladder(
    aiohttp_client, tmp_path, flv: Path, follow_seconds: float = 0.0
) -> tuple[str, str, list[str], list[str]]:
    """Push ``flv`` at its own pace to a stream with a 30 fps rendition.

    Returns the source and rendition media playlists once the push is over,
    and the versions of each seen while following them for
    ``follow_seconds`` from the first playlist.
    """
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await create_ladder_stream(
        box, [{"name": "low", "width": 160, "height": 120, "bitrate": 150, "fps": 30}]
    )
    publisher = await start_ffmpeg_push(flv, box.rtmp_url(stream["stream_key"]))
    try:
        source_path = await wait_for_media_playlist(box, stream["id"])
        rendition_path = await wait_for_rendition_path(box, stream["id"])
        followed: list[list[str]] = [[], []]
        if follow_seconds:
            followed = await asyncio.gather(
                follow_playlists(box, source_path, follow_seconds),
                follow_playlists(box, rendition_path, follow_seconds),
            )
        await asyncio.wait_for(publisher.wait(), 30)
        await asyncio.sleep(1.0)
        source = await get_text(box, source_path)
        rendition = await get_text(box, rendition_path)
    finally:
        await stop(publisher)
    return source, rendition, followed[0], followed[1]


@pytest.mark.timeout(150)
async def test_ladder_timestamp_gap_consistent(aiohttp_client, tmp_path) -> None:
    # A 3 s stall mid-GOP in the source ends its segment and marks a
    # discontinuity. The rendition cuts at the source's frames, so it must
    # list the same segments and discontinuities and keep its tags.
    tags = read_tags(encode_flv(seconds=8, fps=30, gop=30))
    flv = tmp_path / "gap.flv"
    flv.write_bytes(write_flv(tags_with_gap(tags, 105, 3000)))

    source, rendition, source_texts, rendition_texts = await push_through_ladder(
        aiohttp_client, tmp_path, flv, follow_seconds=14.0
    )

    assert "#EXT-X-DISCONTINUITY" in source
    assert long_parts(source_texts) == []
    assert long_parts(rendition_texts) == []
    assert {parse_playlist(t).target_duration for t in rendition_texts} == {1}
    assert segment_lines(rendition) == segment_lines(source)


def test_llhls_three_fps_no_discontinuity(tmp_path) -> None:
    # At 3 fps, millisecond FLV timestamps give frames of 0.333 s and
    # 0.334 s. Neither is a gap: the part target widens to fit both.
    tags = read_tags(encode_flv(seconds=6, fps=3, gop=3, audio=False))
    final = package_tag_by_tag(tmp_path / "stream", tags).versions[-1]

    assert "#EXT-X-DISCONTINUITY" not in final, final


# Frames at 30 fps before the feed of falling_fps_tags slows to 2 fps.
FAST_FRAMES = 45


def falling_fps_tags() -> list[FlvTag]:
    """Return 4 s of video tags: FAST_FRAMES frames at 30 fps, then 2 fps."""
    tags = read_tags(encode_flv(seconds=4, fps=30, gop=30, audio=False))
    video = [tag for tag in tags if tag.kind == VIDEO_TAG]
    headers = [tag for tag in video if not tag.is_media_frame]
    frames = [tag for tag in video if tag.is_media_frame]
    timestamps = [index * 33 for index in range(FAST_FRAMES)]
    slow = len(frames) - FAST_FRAMES
    timestamps += [timestamps[-1] + 500 * (n + 1) for n in range(slow)]
    retimed = [
        replace(frame, timestamp=stamp)
        for frame, stamp in zip(frames, timestamps, strict=True)
    ]
    return headers + retimed


def test_llhls_falling_fps_parts_fit_target(tmp_path) -> None:
    # A screen-capture encoder sends 30 fps while the picture moves and
    # 2 fps while it is still. The part target was set by the 30 fps start,
    # so each 0.5 s frame after it ends a segment with a discontinuity,
    # and no part is longer than PART-TARGET.
    versions = package_tag_by_tag(tmp_path / "stream", falling_fps_tags()).versions
    playlists = [parse_playlist(text) for text in versions]

    assert long_parts(versions) == []
    assert {playlist.part_target for playlist in playlists} == {0.333}
    assert "#EXT-X-DISCONTINUITY" in versions[-1]
    # The frame before each gap gets as much of it as one part allows.
    slow = playlists[-1].segments[-3:]
    assert [segment.duration for segment in slow] == [0.333] * 3


@pytest.mark.timeout(150)
async def test_ladder_slowed_feed_consistent(aiohttp_client, tmp_path) -> None:
    # The rendition gives the frame before each gap the duration that the
    # source gave its own, so both list the same segments.
    tags = falling_fps_tags()
    frames = [tag for tag in tags if tag.is_media_frame]
    flv = tmp_path / "slowing.flv"
    # The first 20 slow frames only: 10 s of the feed at its own pace.
    flv.write_bytes(write_flv(tags[: tags.index(frames[FAST_FRAMES + 20])]))

    source, rendition, _, _ = await push_through_ladder(aiohttp_client, tmp_path, flv)

    assert "#EXTINF:0.333," in source
    assert segment_lines(rendition) == segment_lines(source)


def test_llhls_slow_feed_gap_warnings_limited(tmp_path, caplog) -> None:
    # Each 0.5 s frame of the slow feed is a gap. The first gap is logged at
    # once, and the next warning only a minute later, with the count since.
    tags = falling_fps_tags()
    now = 0.0
    segmenter = Segmenter(
        tmp_path / "stream",
        target_duration=1.0,
        part_duration=PART_TARGET,
        window=100,
        clock=lambda: now,
    )

    frames = [tag for tag in tags if tag.kind == VIDEO_TAG and tag.is_media_frame]

    with caplog.at_level(logging.WARNING, logger="realcast_box.hls.segmenter"):
        for tag in tags:
            if tag is frames[-1]:
                now = 61.0
            feed_tag(segmenter, tag)

    warnings = [
        record.getMessage()
        for record in caplog.records
        if "between two video frames" in record.getMessage()
    ]
    assert len(warnings) == 2, warnings
    assert "such gaps" not in warnings[0]
    assert "longer than the 0.333 s part target" in warnings[0]
    assert "raise hls_part_duration" in warnings[1]
    # One gap per 0.5 s interval: the first was logged, the rest are counted.
    slow_intervals = len(frames) - FAST_FRAMES
    assert f"{slow_intervals - 1} such gaps in the last 61 s" in warnings[1]


def test_llhls_recent_gaps_counted(tmp_path) -> None:
    # Segmenter.recent_gaps feeds the video_gaps field of the stream status.
    tags = falling_fps_tags()
    now = 0.0
    segmenter = Segmenter(
        tmp_path / "stream", part_duration=PART_TARGET, clock=lambda: now
    )
    for tag in tags:
        feed_tag(segmenter, tag)
    frames = [tag for tag in tags if tag.kind == VIDEO_TAG and tag.is_media_frame]

    assert segmenter.recent_gaps(60) == len(frames) - FAST_FRAMES
    now = 61.0
    assert segmenter.recent_gaps(60) == 0


def test_llhls_lone_gap_warned_plainly(tmp_path, caplog) -> None:
    # A gap more than a minute after the last warning, with none between,
    # gets the plain first warning rather than a count of one.
    segmenter = Segmenter(tmp_path / "stream", part_duration=PART_TARGET)

    with caplog.at_level(logging.WARNING, logger="realcast_box.hls.segmenter"):
        for moment in (0.0, 10.0, 100.0, 300.0):
            segmenter._warn_gap(0.5, moment)

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3, messages
    assert "such gaps" not in messages[0]
    assert "2 such gaps in the last 100 s" in messages[1]
    assert "such gaps" not in messages[2]


def hls_counts(scraped) -> dict[tuple[str, str], float]:
    """Return realcast_hls_requests_total by (kind, status)."""
    counts = {}
    for (name, labels), value in scraped.samples.items():
        if name == "realcast_hls_requests_total":
            labels = dict(labels)
            counts[(labels["kind"], labels["status"])] = value
    return counts


@pytest.mark.timeout(120)
async def test_metrics_hls_counts_match_requests(aiohttp_client, tmp_path) -> None:
    # Every /hls request that gets a response is counted once, with the
    # status it was sent with. A blocked reload that the client drops is not.
    box = await start_box(aiohttp_client, tmp_path, **LIVE_SETTINGS)
    stream = await box.create_stream()
    signed = await signed_stream(box)
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "20", "--realtime"
    )
    statuses: list[int] = []
    try:
        media_path = await wait_for_media_playlist(box, stream["id"])
        text = await get_text(box, media_path)
        playlist = parse_playlist(text)
        base = media_path.split("?")[0].rsplit("/", 1)[0]
        part_path = f"{base}/{playlist.parts[0].uri}"
        before = await scrape(box)
        requests = [
            ("GET", media_path, {}),
            ("HEAD", media_path, {}),
            ("GET", with_query(media_path, _HLS_skip="YES"), {}),
            ("GET", with_query(media_path, _HLS_skip="no"), {}),
            ("GET", with_query(media_path, _HLS_msn="x"), {}),
            ("HEAD", with_query(media_path, _HLS_skip="bad"), {}),
            ("GET", part_path, {}),
            ("HEAD", part_path, {}),
            ("GET", part_path, {"Range": "bytes=0-9"}),
            ("GET", f"{base}/seg-1.m4s", {}),
            ("HEAD", f"{base}/seg-1.m4s", {}),
            ("GET", f"/hls/{signed['id']}/index.m3u8", {}),
            ("GET", f"/hls/{signed['id']}/index.m3u8?token=bad", {}),
            ("HEAD", f"/hls/{signed['id']}/index.m3u8", {}),
            ("OPTIONS", media_path, {"Origin": "https://a.example"}),
        ]
        for method, path, headers in requests:
            response = await box.client.request(method, path, headers=headers)
            await response.read()
            statuses.append(response.status)
        # A blocked reload for the next segment, dropped after 0.05 s.
        current = parse_playlist(await get_text(box, media_path))
        blocked = with_query(media_path, _HLS_msn=current.open_msn + 1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(box.client.get(blocked), 0.05)
        await asyncio.sleep(2.5)
        after = await scrape(box)
    finally:
        await stop(publisher)
    counted = {
        key: after_value - hls_counts(before).get(key, 0)
        for key, after_value in hls_counts(after).items()
    }
    counted = {key: value for key, value in counted.items() if value}
    # One more request: the playlist read before the blocked reload.
    assert sum(counted.values()) == len(requests) + 1
    for status in set(statuses):
        sent = statuses.count(status) + (status == 200)
        got = sum(v for (_, s), v in counted.items() if s == str(status))
        assert got == sent, f"status {status}: sent {sent}, counted {got}"


def test_llhls_start_stall_keeps_part_target(tmp_path) -> None:
    # A publisher that announced 30 fps and stalls 0.6 s after its first
    # frame has no low frame rate: the 0.633 s frame is a gap, and the part
    # target stays as configured for the session.
    tags = read_tags(encode_flv(seconds=4, fps=30, gop=30, audio=False))
    versions = package_tag_by_tag(
        tmp_path / "stream", tags_with_gap(tags, 1, 600), metadata={"framerate": 30}
    )
    part_targets = {parse_playlist(text).part_target for text in versions.versions}

    assert part_targets == {0.333}
