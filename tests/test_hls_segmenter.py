"""Segmenter fed real FLV tags (libx264 + FFmpeg AAC), output read back by PyAV."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
from flvfile import AUDIO_TAG, VIDEO_TAG, FlvTag, encode_flv, read_tags

from realcast_box.hls.segmenter import Segmenter, _describe
from realcast_box.media.codecs import parse_aac_config, parse_avc_config
from realcast_box.media.flv import (
    AudioTag,
    InvalidTag,
    VideoTag,
    parse_audio_tag,
    parse_video_tag,
)

# Helpers.


def feed(
    segmenter: Segmenter,
    tags: Iterable[FlvTag],
    timestamp: Callable[[int], int] = lambda ms: ms,
) -> None:
    """Feed tags as RTMP would deliver them, with ``timestamp`` applied."""
    for tag in tags:
        if tag.kind == VIDEO_TAG:
            segmenter.add_video(timestamp(tag.timestamp), parse_video_tag(tag.payload))
        elif tag.kind == AUDIO_TAG:
            segmenter.add_audio(timestamp(tag.timestamp), parse_audio_tag(tag.payload))


def count_frames(tags: Iterable[FlvTag], kind: int) -> int:
    return sum(1 for tag in tags if tag.kind == kind and tag.is_media_frame)


def shifted(tags: list[FlvTag], offset_ms: int) -> list[FlvTag]:
    return [FlvTag(t.kind, t.timestamp + offset_ms, t.payload) for t in tags]


def end_ms(tags: list[FlvTag]) -> int:
    return max(t.timestamp for t in tags) + 34


@dataclass
class Entry:
    uri: str
    duration: float
    map_uri: str
    discontinuity: bool
    program_date_time: str | None


@dataclass
class MediaPlaylist:
    tags: dict[str, str] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    ended: bool = False


def read_media_playlist(path: Path) -> MediaPlaylist:
    result = MediaPlaylist()
    lines = path.read_text().splitlines()
    assert lines[0] == "#EXTM3U"
    map_uri = ""
    discontinuity = False
    date_time = None
    duration = 0.0
    for line in lines[1:]:
        if line.startswith("#EXT-X-MAP:"):
            map_uri = re.fullmatch(r'#EXT-X-MAP:URI="(.+)"', line).group(1)
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line == "#EXT-X-ENDLIST":
            result.ended = True
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            date_time = line.partition(":")[2]
        elif line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:") :].rstrip(","))
        elif line.startswith("#"):
            name, _, value = line.partition(":")
            result.tags[name] = value
        else:
            result.entries.append(
                Entry(line, duration, map_uri, discontinuity, date_time)
            )
            discontinuity = False
            date_time = None
    return result


def stream_inf(directory: Path) -> dict[str, str]:
    lines = (directory / "index.m3u8").read_text().splitlines()
    line = next(line for line in lines if line.startswith("#EXT-X-STREAM-INF:"))
    attributes = re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line.partition(":")[2])
    assert lines[lines.index(line) + 1] == "source/index.m3u8"
    return {name: value.strip('"') for name, value in attributes}


@dataclass
class Decoded:
    video: list[av.VideoFrame]
    audio: list[av.AudioFrame]
    first_video_packet_is_keyframe: bool | None
    duration: float | None


def decode(source: str | Path, **options: str) -> Decoded:
    with av.open(str(source), options=options) as container:
        video, audio, first_key = [], [], None
        for packet in container.demux():
            if packet.stream.type == "video" and first_key is None and packet.size:
                first_key = packet.is_keyframe
            for frame in packet.decode():
                (video if isinstance(frame, av.VideoFrame) else audio).append(frame)
        duration = container.duration / 1e6 if container.duration else None
    return Decoded(video, audio, first_key, duration)


def concatenate(directory: Path, init: str, segments: list[str], target: Path) -> Path:
    data = (directory / init).read_bytes()
    data += b"".join((directory / name).read_bytes() for name in segments)
    target.write_bytes(data)
    return target


def run(
    directory: Path,
    tags: list[FlvTag],
    *,
    finish: bool = True,
    **settings: object,
) -> Segmenter:
    segmenter = Segmenter(directory, **settings)
    feed(segmenter, tags)
    if finish:
        segmenter.finish()
    return segmenter


def seconds(frames: list[av.Frame]) -> list[float]:
    return [float(frame.pts * frame.time_base) for frame in frames]


# Inputs, encoded once per module.


@pytest.fixture(scope="module")
def av_tags() -> list[FlvTag]:
    """10 s of 320x240 30 fps High profile with B-frames, GOP 2 s, 44.1 kHz AAC."""
    return read_tags(
        encode_flv(seconds=10, gop=60, bframes=2, profile="high", preset="veryfast")
    )


@pytest.fixture(scope="module")
def long_tags() -> list[FlvTag]:
    """20 s, GOP 1 s, no B-frames."""
    return read_tags(encode_flv(seconds=20, gop=30))


@pytest.fixture(scope="module")
def audio_tags() -> list[FlvTag]:
    return read_tags(encode_flv(seconds=7, video=False, sample_rate=48000))


@pytest.fixture(scope="module")
def video_tags() -> list[FlvTag]:
    return read_tags(encode_flv(seconds=5, audio=False, gop=30))


@pytest.fixture(scope="module")
def av_output(tmp_path_factory: pytest.TempPathFactory, av_tags: list[FlvTag]) -> Path:
    directory = tmp_path_factory.mktemp("av") / "stream"
    run(directory, av_tags, window=100)
    return directory


# Playback of a whole stream.


def test_segmenter_playlist_decodes_every_video_frame(
    av_output: Path, av_tags: list[FlvTag]
) -> None:
    decoded = decode(av_output / "source/index.m3u8")

    assert len(decoded.video) == count_frames(av_tags, VIDEO_TAG)


def test_segmenter_playlist_decodes_audio(av_output: Path, av_tags: list) -> None:
    decoded = decode(av_output / "source/index.m3u8")
    pushed = count_frames(av_tags, AUDIO_TAG)
    frames_per_segment = 2 * 44100 // 1024

    assert len(decoded.audio) <= pushed
    assert len(decoded.audio) >= pushed - frames_per_segment


def test_segmenter_playlist_timestamps_increase(av_output: Path) -> None:
    decoded = decode(av_output / "source/index.m3u8")
    video_times = seconds(decoded.video)
    audio_times = seconds(decoded.audio)

    assert all(a < b for a, b in itertools.pairwise(video_times))
    assert all(a < b for a, b in itertools.pairwise(audio_times))


def test_segmenter_playlist_duration(av_output: Path) -> None:
    decoded = decode(av_output / "source/index.m3u8")

    assert decoded.duration == pytest.approx(10.0, abs=2.0)


def test_segmenter_concatenated_segments_decode(
    av_output: Path, av_tags: list[FlvTag], tmp_path: Path
) -> None:
    playlist = read_media_playlist(av_output / "source/index.m3u8")
    names = [entry.uri for entry in playlist.entries]
    path = concatenate(av_output / "source", "init-0.mp4", names, tmp_path / "all.mp4")

    decoded = decode(path)
    times = seconds(decoded.video)

    assert len(decoded.video) == count_frames(av_tags, VIDEO_TAG)
    assert times == sorted(times)
    assert decoded.video[-1].width == 320
    assert times[-1] == pytest.approx(10.0, abs=2.0)


def test_segmenter_segments_start_with_keyframe(
    av_output: Path, tmp_path: Path
) -> None:
    playlist = read_media_playlist(av_output / "source/index.m3u8")

    for entry in playlist.entries:
        path = concatenate(
            av_output / "source", entry.map_uri, [entry.uri], tmp_path / "one.mp4"
        )
        decoded = decode(path)
        assert decoded.first_video_packet_is_keyframe, entry.uri
        assert decoded.video[0].key_frame, entry.uri


def test_segmenter_segment_durations_near_target(av_output: Path) -> None:
    playlist = read_media_playlist(av_output / "source/index.m3u8")
    durations = [entry.duration for entry in playlist.entries]

    assert len(durations) == 5
    assert durations[:-1] == pytest.approx([2.0] * 4, abs=0.05)
    assert durations[-1] == pytest.approx(2.0, abs=0.1)


def test_segmenter_media_playlist_header(av_output: Path) -> None:
    playlist = read_media_playlist(av_output / "source/index.m3u8")

    assert playlist.tags["#EXT-X-VERSION"] == "7"
    assert playlist.tags["#EXT-X-TARGETDURATION"] == "2"
    assert playlist.tags["#EXT-X-MEDIA-SEQUENCE"] == "0"
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in playlist.tags
    assert playlist.entries[0].map_uri == "init-0.mp4"
    assert playlist.ended


def test_segmenter_program_date_time_per_segment(av_output: Path) -> None:
    playlist = read_media_playlist(av_output / "source/index.m3u8")
    stamps = [entry.program_date_time for entry in playlist.entries]

    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", s or "")
        for s in stamps
    )
    assert stamps == sorted(stamps)


def test_segmenter_multivariant_playlist(av_output: Path, av_tags: list) -> None:
    video = parse_avc_config(parse_video_tag(av_tags[1].payload).data)
    audio = parse_aac_config(parse_audio_tag(av_tags[2].payload).data)

    attributes = stream_inf(av_output)

    assert video.profile == 100
    assert attributes["CODECS"] == f"{video.codec_string},{audio.codec_string}"
    assert attributes["CODECS"].startswith("avc1.6400")
    assert attributes["RESOLUTION"] == "320x240"


def test_segmenter_bandwidth_covers_peak_segment(av_output: Path) -> None:
    playlist = read_media_playlist(av_output / "source/index.m3u8")
    peak = max(
        (av_output / "source" / entry.uri).stat().st_size * 8 / entry.duration
        for entry in playlist.entries
    )

    bandwidth = int(stream_inf(av_output)["BANDWIDTH"])

    assert bandwidth >= peak
    assert bandwidth <= peak * 1.5


# Live window.


def test_segmenter_window_lists_newest_segments(
    tmp_path: Path, long_tags: list[FlvTag]
) -> None:
    segmenter = run(tmp_path, long_tags, finish=False, window=3)

    playlist = read_media_playlist(tmp_path / "source/index.m3u8")
    numbers = [int(re.findall(r"\d+", e.uri)[0]) for e in playlist.entries]

    assert len(playlist.entries) == 3
    assert numbers == list(range(segmenter.segment_count - 3, segmenter.segment_count))
    assert playlist.tags["#EXT-X-MEDIA-SEQUENCE"] == str(numbers[0])
    assert not playlist.ended


def test_segmenter_window_deletes_old_segments(
    tmp_path: Path, long_tags: list[FlvTag]
) -> None:
    segmenter = run(tmp_path, long_tags, finish=False, window=3)

    on_disk = sorted(p.name for p in (tmp_path / "source").glob("seg-*.m4s"))
    count = segmenter.segment_count
    # The 3 listed 2 s segments, and those that left the playlist less than
    # 10 s of media ago: their own 2 s plus the 8 s of the longest playlist
    # that listed them (RFC 8216 section 6.2.2). Segment 0 left 10 s ago.
    expected = sorted(f"seg-{n}.m4s" for n in range(1, count))

    assert count == 9
    assert on_disk == expected


def test_segmenter_no_temporary_files_left(
    tmp_path: Path, long_tags: list[FlvTag]
) -> None:
    run(tmp_path, long_tags, window=3)

    names = sorted(p.name for p in tmp_path.rglob("*"))

    assert not [name for name in names if name.endswith(".tmp")]


def test_segmenter_endlist_after_finish(tmp_path: Path, long_tags: list) -> None:
    segmenter = run(tmp_path, long_tags, finish=False, window=3)
    count_before = segmenter.segment_count

    segmenter.finish()
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    assert playlist.ended
    assert segmenter.segment_count == count_before + 1
    assert playlist.entries[-1].uri == f"seg-{count_before}.m4s"


def test_segmenter_finish_twice(tmp_path: Path, video_tags: list) -> None:
    segmenter = run(tmp_path, video_tags)
    text = (tmp_path / "source/index.m3u8").read_text()

    segmenter.finish()

    assert (tmp_path / "source/index.m3u8").read_text() == text


def test_segmenter_rejects_tags_after_finish(tmp_path: Path, video_tags: list) -> None:
    segmenter = run(tmp_path, video_tags)

    with pytest.raises(RuntimeError, match="finished"):
        segmenter.add_video(99999, parse_video_tag(video_tags[3].payload))


def test_segmenter_playlist_lists_only_existing_files(
    tmp_path: Path, long_tags: list[FlvTag]
) -> None:
    segmenter = Segmenter(tmp_path, window=2)
    playlist_path = tmp_path / "source/index.m3u8"
    missing = []
    for tag in long_tags:
        feed(segmenter, [tag])
        if playlist_path.exists():
            playlist = read_media_playlist(playlist_path)
            names = {e.uri for e in playlist.entries} | {
                e.map_uri for e in playlist.entries
            }
            missing += [n for n in names if not (tmp_path / "source" / n).exists()]

    assert segmenter.segment_count > 5
    assert missing == []


def test_segmenter_ready_after_first_segment(tmp_path: Path, long_tags: list) -> None:
    segmenter = Segmenter(tmp_path)
    states = []
    for tag in long_tags:
        feed(segmenter, [tag])
        states.append((segmenter.ready, segmenter.segment_count))

    first_ready = next(index for index, (ready, _) in enumerate(states) if ready)

    assert states[first_ready - 1] == (False, 0)
    assert states[first_ready] == (True, 1)
    assert (tmp_path / "index.m3u8").exists()


def test_segmenter_finish_without_media(tmp_path: Path) -> None:
    segmenter = Segmenter(tmp_path)

    segmenter.finish()

    assert not segmenter.ready
    assert list((tmp_path / "source").iterdir()) == []


def test_segmenter_target_duration_long_gop(tmp_path: Path) -> None:
    tags = read_tags(encode_flv(seconds=9, gop=90))

    run(tmp_path, tags)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    assert playlist.tags["#EXT-X-TARGETDURATION"] == "3"
    assert [e.duration for e in playlist.entries] == pytest.approx([3.0] * 3, abs=0.1)


# Config changes.


@pytest.fixture(scope="module")
def resolution_change(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[FlvTag], list[FlvTag]]:
    first = read_tags(encode_flv(seconds=4, gop=30))
    second = read_tags(encode_flv(seconds=4, gop=30, width=640, height=360))
    second = shifted(second, end_ms(first))
    directory = tmp_path_factory.mktemp("change") / "stream"
    run(directory, first + second, window=100)
    return directory, first, second


def test_segmenter_resolution_change_new_init(resolution_change: tuple) -> None:
    directory, _, _ = resolution_change
    playlist = read_media_playlist(directory / "source/index.m3u8")

    maps = [entry.map_uri for entry in playlist.entries]
    changed = maps.index("init-1.mp4")

    assert (directory / "source/init-1.mp4").exists()
    assert playlist.entries[changed].discontinuity
    assert sum(entry.discontinuity for entry in playlist.entries) == 1
    assert set(maps[:changed]) == {"init-0.mp4"}
    assert set(maps[changed:]) == {"init-1.mp4"}


def test_segmenter_resolution_change_multivariant(resolution_change: tuple) -> None:
    directory, _, second = resolution_change
    video = parse_avc_config(parse_video_tag(second[1].payload).data)

    attributes = stream_inf(directory)

    assert attributes["RESOLUTION"] == "640x360"
    assert attributes["CODECS"].split(",")[0] == video.codec_string


def test_segmenter_resolution_change_decodes_both_parts(
    resolution_change: tuple, tmp_path: Path
) -> None:
    directory, first, second = resolution_change
    playlist = read_media_playlist(directory / "source/index.m3u8")
    parts = []
    for init in ("init-0.mp4", "init-1.mp4"):
        names = [e.uri for e in playlist.entries if e.map_uri == init]
        path = concatenate(directory / "source", init, names, tmp_path / init)
        parts.append(decode(path))

    assert {frame.width for frame in parts[0].video} == {320}
    assert {frame.width for frame in parts[1].video} == {640}
    assert len(parts[0].video) == count_frames(first, VIDEO_TAG)
    assert len(parts[1].video) == count_frames(second, VIDEO_TAG)
    assert seconds(parts[0].video)[-1] < seconds(parts[1].video)[0]


def test_segmenter_repeated_sequence_headers_ignored(
    tmp_path: Path, long_tags: list[FlvTag]
) -> None:
    headers = [tag for tag in long_tags[:4] if tag.is_sequence_header]
    tags = []
    for index, tag in enumerate(long_tags):
        if index and index % 50 == 0:
            tags += shifted(headers, tag.timestamp)
        tags.append(tag)

    run(tmp_path, tags, window=100)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    assert len(headers) == 2
    assert not (tmp_path / "source/init-1.mp4").exists()
    assert not any(entry.discontinuity for entry in playlist.entries)


def test_segmenter_new_audio_config(tmp_path: Path) -> None:
    first = read_tags(encode_flv(seconds=4, gop=30, sample_rate=44100))
    second = read_tags(encode_flv(seconds=4, gop=30, sample_rate=48000))

    run(tmp_path, first + shifted(second, end_ms(first)), window=100)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")
    names = [e.uri for e in playlist.entries if e.map_uri == "init-1.mp4"]
    decoded = decode(
        concatenate(tmp_path / "source", "init-1.mp4", names, tmp_path / "b.mp4")
    )

    assert any(entry.discontinuity for entry in playlist.entries)
    assert {frame.sample_rate for frame in decoded.audio} == {48000}
    assert len(decoded.video) == count_frames(second, VIDEO_TAG)


def test_segmenter_discontinuity_sequence_after_window(
    resolution_change: tuple,
) -> None:
    directory, first, second = resolution_change
    # Long enough for the segments of the first two init segments to leave
    # the playlist and then the disk, 10 s of media later.
    third = shifted(read_tags(encode_flv(seconds=20, gop=30)), end_ms(second))
    output = directory.parent / "window"

    run(output, first + second + third, window=2)
    playlist = read_media_playlist(output / "source/index.m3u8")

    assert playlist.tags["#EXT-X-DISCONTINUITY-SEQUENCE"] == "2"
    assert playlist.entries[0].map_uri == "init-2.mp4"
    assert not (output / "source/init-0.mp4").exists()
    assert not (output / "source/init-1.mp4").exists()


def test_segmenter_invalid_video_config_raises(tmp_path: Path, av_tags: list) -> None:
    segmenter = Segmenter(tmp_path)
    bad = VideoTag(True, True, False, 0, b"\x01\x64\x00")

    with pytest.raises(InvalidTag, match="avcC"):
        segmenter.add_video(0, bad)
    feed(segmenter, av_tags)
    segmenter.finish()

    assert segmenter.video_config is not None
    assert segmenter.segment_count == 5


def test_segmenter_invalid_audio_config_raises(tmp_path: Path) -> None:
    segmenter = Segmenter(tmp_path)

    with pytest.raises(InvalidTag, match="AudioSpecificConfig"):
        segmenter.add_audio(0, AudioTag(True, b"\x00\x00"))
    assert segmenter.audio_config is None


def test_segmenter_config_properties(tmp_path: Path, av_tags: list) -> None:
    segmenter = Segmenter(tmp_path)
    feed(segmenter, av_tags[:3])

    assert segmenter.video_config is not None
    assert segmenter.video_config.width == 320
    assert segmenter.audio_config is not None
    assert segmenter.audio_config.sample_rate == 44100


# Track sets.


def test_segmenter_audio_only(tmp_path: Path, audio_tags: list[FlvTag]) -> None:
    run(tmp_path, audio_tags, window=100)

    playlist = read_media_playlist(tmp_path / "source/index.m3u8")
    decoded = decode(tmp_path / "source/index.m3u8")
    attributes = stream_inf(tmp_path)

    assert attributes["CODECS"] == "mp4a.40.2"
    assert "RESOLUTION" not in attributes
    assert decoded.video == []
    assert len(decoded.audio) == count_frames(audio_tags, AUDIO_TAG)
    assert [e.duration for e in playlist.entries[:-1]] == pytest.approx(
        [2.0] * 3, abs=0.03
    )


def test_segmenter_audio_only_timestamps_increase(
    tmp_path: Path, audio_tags: list[FlvTag]
) -> None:
    run(tmp_path, audio_tags, window=100)

    times = seconds(decode(tmp_path / "source/index.m3u8").audio)

    assert all(a < b for a, b in itertools.pairwise(times))


def test_segmenter_audio_only_waits_for_video_config(
    tmp_path: Path, audio_tags: list[FlvTag]
) -> None:
    segmenter = Segmenter(tmp_path)
    early = [tag for tag in audio_tags if tag.timestamp < 900]

    feed(segmenter, early)

    assert (tmp_path / "source").exists()
    assert list((tmp_path / "source").iterdir()) == []


def test_segmenter_audio_only_from_metadata(tmp_path: Path, audio_tags: list) -> None:
    segmenter = Segmenter(tmp_path, target_duration=0.5)
    segmenter.set_metadata({"hasVideo": False, "hasAudio": True})
    early = [tag for tag in audio_tags if tag.timestamp < 900]

    feed(segmenter, early)

    assert segmenter.segment_count >= 1


def test_segmenter_video_only(tmp_path: Path, video_tags: list[FlvTag]) -> None:
    run(tmp_path, video_tags, window=100)

    decoded = decode(tmp_path / "source/index.m3u8")
    attributes = stream_inf(tmp_path)
    init = (tmp_path / "source/init-0.mp4").read_bytes()

    assert attributes["CODECS"].startswith("avc1.")
    assert "," not in attributes["CODECS"]
    assert init.count(b"trak") == 1
    assert decoded.audio == []
    assert len(decoded.video) == count_frames(video_tags, VIDEO_TAG)


def test_segmenter_late_audio_config_adds_track(
    tmp_path: Path, av_tags: list[FlvTag]
) -> None:
    # The audio config arrives 3 s in: video-only first, then a new init
    # with both tracks at the next keyframe.
    audio_header = next(t for t in av_tags if t.kind == AUDIO_TAG)
    tags = [t for t in av_tags if t.kind != AUDIO_TAG or t.timestamp >= 3000]
    tags.insert(tags.index(next(t for t in tags if t.timestamp >= 3000)), audio_header)

    run(tmp_path, tags, window=100)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    assert stream_inf(tmp_path)["CODECS"].endswith(",mp4a.40.2")
    assert playlist.entries[0].map_uri == "init-0.mp4"
    assert playlist.entries[-1].map_uri == "init-1.mp4"
    assert (tmp_path / "source/init-1.mp4").read_bytes().count(b"trak") == 2


def test_segmenter_waits_for_announced_audio_config(
    tmp_path: Path, av_tags: list[FlvTag]
) -> None:
    # Metadata announces audio; the audio header comes after the first
    # keyframe but within a second, so the first init has both tracks.
    audio_header = av_tags[2]
    tags = [t for t in av_tags if t is not audio_header]
    first_audio = next(t for t in tags if t.kind == AUDIO_TAG)
    tags.insert(tags.index(first_audio), audio_header)
    segmenter = Segmenter(tmp_path, window=100)
    segmenter.set_metadata({"hasVideo": True, "hasAudio": True})

    feed(segmenter, tags)
    segmenter.finish()

    assert (tmp_path / "source/init-0.mp4").read_bytes().count(b"trak") == 2
    assert not (tmp_path / "source/init-1.mp4").exists()


def test_segmenter_audio_before_keyframe_dropped(tmp_path: Path) -> None:
    # Video from the second keyframe (about 500 ms) on, audio from the start.
    tags = read_tags(encode_flv(seconds=4, gop=15))
    keyframes = [
        t.timestamp
        for t in tags
        if t.kind == VIDEO_TAG and t.is_media_frame and t.payload[0] >> 4 == 1
    ]
    start = keyframes[1]
    tags = [
        t
        for t in tags
        if t.kind != VIDEO_TAG or t.is_sequence_header or t.timestamp >= start
    ]
    kept_audio = [
        t
        for t in tags
        if t.kind == AUDIO_TAG and t.is_media_frame and t.timestamp >= start
    ]

    run(tmp_path, tags, window=100)
    decoded = decode(tmp_path / "source/index.m3u8")

    assert len(decoded.audio) == len(kept_audio)
    assert seconds(decoded.audio)[0] >= seconds(decoded.video)[0] - 0.001


# Timestamps.


def test_segmenter_timestamp_wrap(tmp_path: Path, av_tags: list[FlvTag]) -> None:
    # RTMP timestamps are 32 bits: start 4 s before the wrap.
    def wrap(ms: int) -> int:
        return (ms + 2**32 - 4000) % 2**32

    segmenter = Segmenter(tmp_path, window=100)
    feed(segmenter, av_tags, wrap)
    segmenter.finish()
    decoded = decode(tmp_path / "source/index.m3u8")
    times = seconds(decoded.video)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    assert len(decoded.video) == count_frames(av_tags, VIDEO_TAG)
    assert all(a < b for a, b in itertools.pairwise(times))
    assert max(e.duration for e in playlist.entries) < 2.1


def test_segmenter_backward_jump(tmp_path: Path, long_tags: list[FlvTag]) -> None:
    def jump(ms: int) -> int:
        return ms if ms < 5000 else ms - 3000

    segmenter = Segmenter(tmp_path, window=100)
    feed(segmenter, long_tags, jump)
    segmenter.finish()
    decoded = decode(tmp_path / "source/index.m3u8")
    video_times = seconds(decoded.video)
    audio_times = seconds(decoded.audio)

    assert len(decoded.video) == count_frames(long_tags, VIDEO_TAG)
    assert all(a < b for a, b in itertools.pairwise(video_times))
    assert all(a < b for a, b in itertools.pairwise(audio_times))
    assert video_times[-1] == pytest.approx(20.0, abs=0.5)


def test_segmenter_forward_jump(tmp_path: Path, long_tags: list[FlvTag]) -> None:
    def jump(ms: int) -> int:
        return ms if ms < 5000 else ms + 60_000

    segmenter = Segmenter(tmp_path, window=100)
    feed(segmenter, long_tags, jump)
    segmenter.finish()
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    # Kept as a gap, the jump would make one segment over 60 s long.
    assert max(e.duration for e in playlist.entries) < 2.1


def test_segmenter_repeated_timestamps_keep_dts_increasing(
    tmp_path: Path, long_tags: list[FlvTag]
) -> None:
    # Timestamps rounded down to 100 ms: three video frames share each one.
    segmenter = Segmenter(tmp_path, window=100)
    feed(segmenter, long_tags, lambda ms: ms // 100 * 100)
    segmenter.finish()

    with av.open(str(tmp_path / "source/index.m3u8")) as container:
        stream = container.streams.video[0]
        dts = [p.dts for p in container.demux(stream) if p.size]

    assert len(dts) == count_frames(long_tags, VIDEO_TAG)
    assert all(a < b for a, b in itertools.pairwise(dts))


# Settings.


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"target_duration": 0}, "target_duration"),
        ({"window": 0}, "window"),
        ({"rendition": "../x"}, "rendition"),
    ],
)
def test_segmenter_invalid_settings(
    tmp_path: Path, settings: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Segmenter(tmp_path, **settings)


def test_segmenter_frozen_clock_caps_segment_bytes(
    tmp_path: Path, av_tags: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A publisher whose timestamps never advance would otherwise keep one
    # segment open, in memory, forever.
    cap = 20_000
    monkeypatch.setattr("realcast_box.hls.segmenter.MAX_SEGMENT_BYTES", cap)
    segmenter = Segmenter(tmp_path)
    feed(segmenter, av_tags, timestamp=lambda ms: 0)
    segmenter.finish()

    segments = sorted((tmp_path / "source").glob("seg-*.m4s"))
    assert len(segments) > 1
    largest_frame = max(len(tag.payload) for tag in av_tags)
    for segment in segments:
        assert segment.stat().st_size <= cap + largest_frame + 4096


# Publisher changes within one session.


def run_two_publishers(
    directory: Path, first: list[FlvTag], second: list[FlvTag], **settings: object
) -> Segmenter:
    """Feed ``first``, end its publisher with a discontinuity, then ``second``."""
    segmenter = Segmenter(directory, **settings)
    feed(segmenter, first)
    segmenter.discontinuity()
    feed(segmenter, second)
    segmenter.finish()
    return segmenter


@pytest.fixture(scope="module")
def second_publisher_tags() -> list[FlvTag]:
    """A second publisher's feed: same settings, its own clock from 0."""
    return read_tags(encode_flv(seconds=4, gop=30, first_frame=300))


def test_segmenter_discontinuity_keeps_same_init(
    tmp_path: Path, long_tags: list[FlvTag], second_publisher_tags: list[FlvTag]
) -> None:
    first = long_tags[: len(long_tags) // 4]
    run_two_publishers(tmp_path, first, second_publisher_tags, window=100)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    joins = [i for i, entry in enumerate(playlist.entries) if entry.discontinuity]
    assert len(joins) == 1
    assert {entry.map_uri for entry in playlist.entries} == {"init-0.mp4"}
    assert not (tmp_path / "source/init-1.mp4").exists()
    assert playlist.ended


def test_segmenter_discontinuity_timestamps_continue(
    tmp_path: Path, long_tags: list[FlvTag], second_publisher_tags: list[FlvTag]
) -> None:
    first = long_tags[: len(long_tags) // 4]
    run_two_publishers(tmp_path, first, second_publisher_tags, window=100)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")
    names = [entry.uri for entry in playlist.entries]
    path = concatenate(tmp_path / "source", "init-0.mp4", names, tmp_path / "a.mp4")

    decoded = decode(path)
    video_times = seconds(decoded.video)
    audio_times = seconds(decoded.audio)
    sent = count_frames(first, VIDEO_TAG) + count_frames(
        second_publisher_tags, VIDEO_TAG
    )

    assert len(decoded.video) == sent
    assert all(a < b for a, b in itertools.pairwise(video_times))
    assert all(a < b for a, b in itertools.pairwise(audio_times))
    # No gap at the join: the second feed starts where the first ended.
    assert video_times[-1] == pytest.approx(5 + 4, abs=0.2)


def test_segmenter_discontinuity_segments_start_with_keyframe(
    tmp_path: Path, long_tags: list[FlvTag], second_publisher_tags: list[FlvTag]
) -> None:
    # The first feed stops mid-GOP, as a dropped connection does.
    first = [t for t in long_tags if t.timestamp < 4500]
    run_two_publishers(tmp_path, first, second_publisher_tags, window=100)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    for entry in playlist.entries:
        path = concatenate(
            tmp_path / "source", entry.map_uri, [entry.uri], tmp_path / "one.mp4"
        )
        assert decode(path).first_video_packet_is_keyframe, entry.uri


def test_segmenter_discontinuity_new_config_new_init(
    tmp_path: Path, long_tags: list[FlvTag]
) -> None:
    first = long_tags[: len(long_tags) // 4]
    second = read_tags(encode_flv(seconds=4, gop=30, width=640, height=360))
    run_two_publishers(tmp_path, first, second, window=100)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    changed = [entry for entry in playlist.entries if entry.map_uri == "init-1.mp4"]

    assert changed
    assert changed[0].discontinuity
    assert sum(entry.discontinuity for entry in playlist.entries) == 1
    assert stream_inf(tmp_path)["RESOLUTION"] == "640x360"


def test_segmenter_discontinuity_audio_only_feed_after_video(
    tmp_path: Path, long_tags: list[FlvTag], audio_tags: list[FlvTag]
) -> None:
    first = long_tags[: len(long_tags) // 4]
    run_two_publishers(tmp_path, first, audio_tags, window=100)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")
    names = [e.uri for e in playlist.entries if e.map_uri == "init-1.mp4"]
    decoded = decode(
        concatenate(tmp_path / "source", "init-1.mp4", names, tmp_path / "b.mp4")
    )

    assert stream_inf(tmp_path)["CODECS"] == "mp4a.40.2"
    assert decoded.video == []
    assert len(decoded.audio) == count_frames(audio_tags, AUDIO_TAG)


def test_segmenter_finish_while_waiting_for_publisher(
    tmp_path: Path, long_tags: list[FlvTag]
) -> None:
    segmenter = Segmenter(tmp_path, window=100)
    feed(segmenter, long_tags[: len(long_tags) // 4])
    segmenter.discontinuity()
    count = segmenter.segment_count

    segmenter.finish()
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")

    assert playlist.ended
    assert segmenter.segment_count == count
    assert len(playlist.entries) == count


def test_segmenter_discontinuity_writes_open_segment(
    tmp_path: Path, long_tags: list[FlvTag]
) -> None:
    segmenter = Segmenter(tmp_path, window=100)
    first = long_tags[: len(long_tags) // 4]
    feed(segmenter, first)
    before = segmenter.segment_count

    segmenter.discontinuity()
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")
    names = [entry.uri for entry in playlist.entries]
    # Decoded from files: FFmpeg would wait for a live playlist to grow.
    path = concatenate(tmp_path / "source", "init-0.mp4", names, tmp_path / "a.mp4")

    assert segmenter.segment_count == before + 1
    assert not playlist.ended
    assert len(decode(path).video) == count_frames(first, VIDEO_TAG)


def test_segmenter_first_sequence_numbers(tmp_path: Path, long_tags: list) -> None:
    segmenter = run(tmp_path, long_tags, window=3, first_sequence=1_700_000_000_000)
    playlist = read_media_playlist(tmp_path / "source/index.m3u8")
    numbers = [int(re.findall(r"\d+", e.uri)[0]) for e in playlist.entries]
    last = 1_700_000_000_000 + segmenter.segment_count - 1

    assert numbers == [last - 2, last - 1, last]
    assert playlist.tags["#EXT-X-MEDIA-SEQUENCE"] == str(last - 2)
    assert segmenter.next_sequence == last + 1


def test_segmenter_first_sequence_negative_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="first_sequence"):
        Segmenter(tmp_path, first_sequence=-1)


@pytest.mark.parametrize(
    ("config", "channels"), [(b"\x11\x88", "1 channel"), (b"\x11\x90", "2 channels")]
)
def test_segmenter_describe_channel_count(config, channels):
    # AAC-LC at 48 kHz, mono and stereo (AudioSpecificConfig bytes).
    text = _describe(None, parse_aac_config(config))
    assert text == f"audio mp4a.40.2 48000 Hz {channels}"
