"""Low-latency HLS edge cases against RFC 8216bis rules and the box's promises.

Low frame rates, timestamp gaps, long GOPs and far-ahead directives, each of
which broke a rule once. Each test packages real FLV media (libx264 and AAC
from tests/flvfile.py) with the segmenter, as the low-latency tests do, and
checks one rule.
"""

from __future__ import annotations

from dataclasses import replace

from flvfile import VIDEO_TAG, encode_flv, read_tags

from realcast_box.hls.output import MAX_PART_INDEX
from realcast_box.hls.segmenter import Segmenter
from tests.llhls_check import constant_tags, parse_playlist
from tests.test_hls_low_latency import PART_TARGET, feed_tag, package_tag_by_tag


def test_llhls_low_fps_parts_within_target(tmp_path) -> None:
    # At 2 fps one frame lasts 0.5 s, longer than the 0.333 s part target.
    # RFC 8216bis: every part is at most PART-TARGET long. The last assert
    # checks that PART-HOLD-BACK still spans three of the parts written.
    tags = read_tags(encode_flv(seconds=6, fps=2, gop=2))
    versions = package_tag_by_tag(tmp_path / "stream", tags).versions
    longest = 0.0
    part_target = None
    hold_back = None
    for text in versions:
        playlist = parse_playlist(text)
        part_target = playlist.part_target
        hold_back = float(playlist.server_control["PART-HOLD-BACK"])
        for part in playlist.parts:
            longest = max(longest, part.duration)

    assert longest > 0
    assert longest <= part_target, f"part of {longest} s > PART-TARGET {part_target}"
    assert hold_back >= 3 * longest


def test_multivariant_long_gop_not_independent(tmp_path) -> None:
    # Keyframes every 2.5 s against a 1 s target: segments start mid-GOP and
    # the media playlist leaves out EXT-X-INDEPENDENT-SEGMENTS. In a
    # multivariant playlist the tag covers every segment of every variant
    # (RFC 8216 section 4.3.5.1), so it must be left out there too.
    directory = tmp_path / "stream"
    segmenter = Segmenter(directory, target_duration=1.0, part_duration=PART_TARGET)
    media_without_tag = False
    multivariant_with_tag = False
    for tag in read_tags(encode_flv(seconds=6, fps=30, gop=75)):
        feed_tag(segmenter, tag)
        live = segmenter.files.live_playlist()
        if live is None or b"#EXT-X-INDEPENDENT-SEGMENTS" in live:
            continue
        media_without_tag = True
        multivariant = (directory / "index.m3u8").read_text()
        if "#EXT-X-INDEPENDENT-SEGMENTS" in multivariant:
            multivariant_with_tag = True
    segmenter.finish()

    assert media_without_tag
    assert not multivariant_with_tag


def test_llhls_part_far_ahead_rejected(tmp_path) -> None:
    # RFC 8216bis: a part more than the Advance Part Limit past the newest
    # part gets a 400 at once. Part 999 of the next segment is hundreds of
    # parts ahead, so it must be refused, not waited for until a 503.
    tags = read_tags(encode_flv(seconds=3, fps=30, gop=30))
    segmenter = Segmenter(
        tmp_path / "stream", target_duration=1.0, part_duration=PART_TARGET
    )
    for tag in tags:
        feed_tag(segmenter, tag)
    files = segmenter.files
    last_msn, _ = files.last_part
    far_part = MAX_PART_INDEX - 1
    problems = {
        ahead: files.check_delivery_directive(last_msn + ahead, far_part)
        for ahead in (1, 2)
    }
    segmenter.finish()

    assert problems[1] is not None, f"part {far_part} of segment {last_msn + 1}"
    assert problems[2] is not None, f"part {far_part} of segment {last_msn + 2}"


def _gap_versions(tmp_path, gap_ms: int, *, audio: bool, at: float = 0.5) -> list:
    tags = read_tags(encode_flv(seconds=6, fps=30, gop=30, audio=audio))
    video = [tag for tag in tags if tag.kind == VIDEO_TAG]
    gap_at = video[int(len(video) * at)].timestamp
    shifted = [
        replace(tag, timestamp=tag.timestamp + gap_ms)
        if tag.timestamp > gap_at
        else tag
        for tag in tags
    ]
    versions = package_tag_by_tag(tmp_path / "stream", shifted).versions
    return [parse_playlist(text) for text in versions]


def test_llhls_timestamp_gap_keeps_tags(tmp_path) -> None:
    # A publisher that stalls for 4 s and then sends on with timestamps
    # that count the stall leaves a 4 s step between two frames. The
    # timeline keeps forward steps up to 10 s. EXT-X-TARGETDURATION,
    # HOLD-BACK and PART-TARGET must still stay the same within the session.
    playlists = _gap_versions(tmp_path, 4000, audio=False)
    longest = max(part.duration for playlist in playlists for part in playlist.parts)
    first = constant_tags(playlists[0])
    changed = [constant_tags(p) for p in playlists if constant_tags(p) != first]

    assert changed == [], f"tags changed from {first} to {changed[:1]}"
    assert longest <= playlists[0].part_target


def test_llhls_timestamp_gap_marks_discontinuity(tmp_path) -> None:
    playlists = _gap_versions(tmp_path, 4000, audio=False)
    final = playlists[-1]

    assert "#EXT-X-DISCONTINUITY" in final.text
    assert final.part_target == PART_TARGET
    # The listed durations leave the 4 s gap out: about 6 s of media.
    assert sum(segment.duration for segment in final.segments) < 6.5


def test_llhls_gap_with_audio_keeps_tags(tmp_path) -> None:
    playlists = _gap_versions(tmp_path, 3000, audio=True)
    first = constant_tags(playlists[0])
    longest = max(part.duration for playlist in playlists for part in playlist.parts)

    assert all(constant_tags(playlist) == first for playlist in playlists)
    assert longest <= playlists[0].part_target
    assert "#EXT-X-DISCONTINUITY" in playlists[-1].text


def test_llhls_low_fps_widens_target_once(tmp_path) -> None:
    # 2 fps: frames of 0.5 s. The part target becomes 0.625 s (a quarter of
    # headroom) before the first playlist and stays there.
    tags = read_tags(encode_flv(seconds=6, fps=2, gop=2))
    playlists = [
        parse_playlist(text)
        for text in package_tag_by_tag(tmp_path / "stream", tags).versions
    ]

    assert {playlist.part_target for playlist in playlists} == {0.625}
    assert all("#EXT-X-DISCONTINUITY" not in p.text for p in playlists)


def test_llhls_early_stall_is_gap(tmp_path) -> None:
    # A 2 s stall right after the first frame is no frame rate: the part
    # target stays as configured and the stall is a gap.
    playlists = _gap_versions(tmp_path, 2000, audio=False, at=0.0)

    assert {playlist.part_target for playlist in playlists} == {PART_TARGET}
    assert "#EXT-X-DISCONTINUITY" in playlists[-1].text
