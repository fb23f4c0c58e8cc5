"""fMP4 box writer: box layout read back by a small parser, then decoded by PyAV."""

from __future__ import annotations

import io
import struct

import av
import pytest
from flvfile import AUDIO_TAG, VIDEO_TAG, encode_flv, read_tags

from realcast_box.hls.fmp4 import (
    NON_SYNC_SAMPLE_FLAGS,
    SYNC_SAMPLE_FLAGS,
    Fragment,
    Sample,
    Track,
    init_segment,
    media_segment,
)
from realcast_box.media.codecs import AacConfig, parse_aac_config, parse_avc_config
from realcast_box.media.flv import parse_audio_tag, parse_video_tag

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf"}
CONTAINERS |= {b"dinf"}


def parse_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split ``data`` into (type, body) pairs, checking that sizes add up."""
    boxes = []
    position = 0
    while position < len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        assert size >= 8, f"box {kind!r} at {position} has size {size}"
        assert position + size <= len(data), f"box {kind!r} overruns its parent"
        boxes.append((kind, data[position + 8 : position + size]))
        position += size
    return boxes


def find_box(data: bytes, path: str) -> bytes:
    """Return the body of the first box along ``path``, e.g. "moov/trak/tkhd"."""
    for name in path.split("/"):
        data = next(body for kind, body in parse_boxes(data) if kind == name.encode())
    return data


def find_all(data: bytes, kind: bytes) -> list[bytes]:
    return [body for name, body in parse_boxes(data) if name == kind]


def read_trun(body: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Return (version, data_offset, sample entries) of a trun body."""
    version = body[0]
    flags = int.from_bytes(body[1:4], "big")
    count, data_offset = struct.unpack_from(">Ii", body, 4)
    fields = bin(flags & 0xF00).count("1")
    entry_format = ">" + "I" * (fields - 1) + ("i" if version else "I")
    if not flags & 0x800:
        entry_format = ">" + "I" * fields
    entries = list(struct.iter_unpack(entry_format, body[12 : 12 + count * 4 * fields]))
    return version, data_offset, entries


@pytest.fixture(scope="module")
def flv_tags() -> list:
    return read_tags(encode_flv(seconds=2.0, gop=30, bframes=2, profile="main"))


@pytest.fixture(scope="module")
def tracks(flv_tags: list) -> list[Track]:
    video_header = next(t for t in flv_tags if t.kind == VIDEO_TAG)
    audio_header = next(t for t in flv_tags if t.kind == AUDIO_TAG)
    video = parse_avc_config(parse_video_tag(video_header.payload).data)
    audio = parse_aac_config(parse_audio_tag(audio_header.payload).data)
    return [Track(1, 90000, video), Track(2, audio.sample_rate, audio)]


def video_samples(flv_tags: list) -> list[tuple[int, Sample]]:
    """Return (dts, sample) for each video frame, durations from DTS deltas."""
    frames = [
        (t.timestamp * 90, parse_video_tag(t.payload))
        for t in flv_tags
        if t.kind == VIDEO_TAG and t.is_media_frame
    ]
    samples = []
    for index, (dts, tag) in enumerate(frames):
        next_dts = frames[index + 1][0] if index + 1 < len(frames) else dts + 3000
        sample = Sample(
            tag.data, next_dts - dts, tag.keyframe, tag.composition_time * 90
        )
        samples.append((dts, sample))
    return samples


def audio_samples(flv_tags: list) -> list[Sample]:
    return [
        Sample(parse_audio_tag(t.payload).data, 1024)
        for t in flv_tags
        if t.kind == AUDIO_TAG and t.is_media_frame
    ]


# Init segment.


def test_init_segment_top_level_boxes(tracks: list[Track]) -> None:
    data = init_segment(tracks)

    assert [kind for kind, _ in parse_boxes(data)] == [b"ftyp", b"moov"]


def test_init_segment_brands(tracks: list[Track]) -> None:
    ftyp = find_box(init_segment(tracks), "ftyp")

    assert ftyp[:4] == b"iso5"
    assert b"iso6" in ftyp[8:]


def test_init_segment_moov_children(tracks: list[Track]) -> None:
    moov = find_box(init_segment(tracks), "moov")

    kinds = [kind for kind, _ in parse_boxes(moov)]

    assert kinds == [b"mvhd", b"trak", b"trak", b"mvex"]


def test_init_segment_next_track_id(tracks: list[Track]) -> None:
    mvhd = find_box(init_segment(tracks), "moov/mvhd")

    assert struct.unpack(">I", mvhd[-4:]) == (3,)


def test_init_segment_trex_per_track(tracks: list[Track]) -> None:
    mvex = find_box(init_segment(tracks), "moov/mvex")

    track_ids = [
        struct.unpack_from(">I", body, 4)[0] for body in find_all(mvex, b"trex")
    ]

    assert track_ids == [1, 2]


def test_init_segment_video_sample_entry(tracks: list[Track]) -> None:
    stsd = find_box(init_segment(tracks), "moov/trak/mdia/minf/stbl/stsd")
    avc1 = find_box(stsd[8:], "avc1")

    width, height = struct.unpack_from(">HH", avc1, 24)
    avcc = find_box(avc1[78:], "avcC")

    assert (width, height) == (320, 240)
    assert avcc == tracks[0].config.record


def test_init_segment_video_track_header(tracks: list[Track]) -> None:
    tkhd = find_box(init_segment(tracks), "moov/trak/tkhd")

    width, height = struct.unpack(">II", tkhd[-8:])

    assert (width >> 16, height >> 16) == (320, 240)
    assert struct.unpack_from(">I", tkhd, 12) == (1,)


def test_init_segment_handlers_and_timescales(tracks: list[Track]) -> None:
    moov = find_box(init_segment(tracks), "moov")
    traks = find_all(moov, b"trak")

    handlers = [find_box(trak, "mdia/hdlr")[8:12] for trak in traks]
    timescales = [
        struct.unpack_from(">I", find_box(trak, "mdia/mdhd"), 12)[0] for trak in traks
    ]

    assert handlers == [b"vide", b"soun"]
    assert timescales == [90000, 44100]


def test_init_segment_audio_sample_entry(tracks: list[Track]) -> None:
    trak = find_all(find_box(init_segment(tracks), "moov"), b"trak")[1]
    stsd = find_box(trak, "mdia/minf/stbl/stsd")
    mp4a = find_box(stsd[8:], "mp4a")

    channels, sample_size = struct.unpack_from(">HH", mp4a, 16)
    (rate,) = struct.unpack_from(">I", mp4a, 24)
    esds = find_box(mp4a[28:], "esds")

    assert (channels, sample_size) == (2, 16)
    assert rate >> 16 == 44100
    assert tracks[1].config.config in esds


def test_init_segment_long_audio_config_descriptor_size() -> None:
    config = AacConfig(
        config=bytes(range(200)), object_type=2, sample_rate=48000, channels=2
    )
    data = init_segment([Track(1, 48000, config)])

    esds = find_box(data, "moov/trak/mdia/minf/stbl/stsd")[8:]
    esds = find_box(find_box(esds, "mp4a")[28:], "esds")
    start = esds.index(bytes([0x05, 0x81, 0x48]))  # tag 5, size 200 in two bytes

    assert esds[start + 3 : start + 203] == bytes(range(200))


def test_init_segment_needs_a_track() -> None:
    with pytest.raises(ValueError, match="at least one track"):
        init_segment([])


# Media segment.


def test_media_segment_layout(tracks: list[Track], flv_tags: list) -> None:
    video = [sample for _, sample in video_samples(flv_tags)[:30]]
    audio = audio_samples(flv_tags)[:43]
    data = media_segment(
        5, [Fragment(tracks[0], 0, video), Fragment(tracks[1], 0, audio)]
    )

    boxes = parse_boxes(data)
    moof = boxes[0][1]

    assert [kind for kind, _ in boxes] == [b"moof", b"mdat"]
    assert struct.unpack_from(">I", find_box(moof, "mfhd"), 4) == (5,)
    assert len(find_all(moof, b"traf")) == 2


def test_media_segment_data_offsets_locate_samples(
    tracks: list[Track], flv_tags: list
) -> None:
    video = [sample for _, sample in video_samples(flv_tags)[:30]]
    audio = audio_samples(flv_tags)[:43]
    data = media_segment(
        1, [Fragment(tracks[0], 0, video), Fragment(tracks[1], 0, audio)]
    )
    moof = parse_boxes(data)[0][1]

    for traf, samples in zip(find_all(moof, b"traf"), (video, audio), strict=True):
        _, offset, entries = read_trun(find_box(traf, "trun"))
        sizes = [entry[1] for entry in entries]
        expected = b"".join(sample.data for sample in samples)
        assert sizes == [len(sample.data) for sample in samples]
        assert data[offset : offset + sum(sizes)] == expected


def test_media_segment_video_sample_flags(tracks: list[Track], flv_tags: list) -> None:
    video = [sample for _, sample in video_samples(flv_tags)[:30]]
    moof = parse_boxes(media_segment(1, [Fragment(tracks[0], 0, video)]))[0][1]

    _, _, entries = read_trun(find_box(moof, "traf/trun"))

    assert entries[0][2] == SYNC_SAMPLE_FLAGS
    assert all(entry[2] == NON_SYNC_SAMPLE_FLAGS for entry in entries[1:])


def test_media_segment_trun_version_0_offsets(tracks: list[Track]) -> None:
    samples = [Sample(b"a", 3000, True, 6000), Sample(b"b", 3000, False, 0)]
    moof = parse_boxes(media_segment(1, [Fragment(tracks[0], 0, samples)]))[0][1]

    version, _, entries = read_trun(find_box(moof, "traf/trun"))

    assert version == 0
    assert [entry[3] for entry in entries] == [6000, 0]


def test_media_segment_trun_version_1_negative_offsets(tracks: list[Track]) -> None:
    samples = [Sample(b"a", 3000, True, -3000), Sample(b"b", 3000, False, 3000)]
    moof = parse_boxes(media_segment(1, [Fragment(tracks[0], 0, samples)]))[0][1]

    version, _, entries = read_trun(find_box(moof, "traf/trun"))

    assert version == 1
    assert [entry[3] for entry in entries] == [-3000, 3000]


def test_media_segment_audio_default_flags(tracks: list[Track]) -> None:
    samples = [Sample(b"x" * 10, 1024), Sample(b"y" * 12, 1024)]
    moof = parse_boxes(media_segment(1, [Fragment(tracks[1], 0, samples)]))[0][1]
    tfhd = find_box(moof, "traf/tfhd")

    flags = int.from_bytes(tfhd[1:4], "big")
    track_id, default_flags = struct.unpack_from(">II", tfhd, 4)

    assert flags == 0x020020  # default-base-is-moof, default-sample-flags
    assert track_id == 2
    assert default_flags == SYNC_SAMPLE_FLAGS


def test_media_segment_tfdt_64_bit(tracks: list[Track]) -> None:
    base = 2**33 + 5
    moof = parse_boxes(
        media_segment(1, [Fragment(tracks[1], base, [Sample(b"x", 1024)])])
    )[0][1]

    tfdt = find_box(moof, "traf/tfdt")

    assert tfdt[0] == 1
    assert struct.unpack_from(">Q", tfdt, 4) == (base,)


def test_media_segment_skips_empty_fragments(tracks: list[Track]) -> None:
    data = media_segment(
        1, [Fragment(tracks[0], 0, []), Fragment(tracks[1], 0, [Sample(b"x", 1024)])]
    )

    moof = parse_boxes(data)[0][1]

    assert len(find_all(moof, b"traf")) == 1


def test_media_segment_needs_samples(tracks: list[Track]) -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        media_segment(1, [Fragment(tracks[0], 0, [])])


# Decoded by FFmpeg.


def test_fmp4_decodes_with_pyav(tracks: list[Track], flv_tags: list) -> None:
    video = video_samples(flv_tags)
    audio = audio_samples(flv_tags)
    first = media_segment(
        1,
        [
            Fragment(tracks[0], video[0][0], [s for _, s in video[:30]]),
            Fragment(tracks[1], 0, audio[:40]),
        ],
    )
    second = media_segment(
        2,
        [
            Fragment(tracks[0], video[30][0], [s for _, s in video[30:]]),
            Fragment(tracks[1], 40 * 1024, audio[40:]),
        ],
    )

    container = av.open(io.BytesIO(init_segment(tracks) + first + second))
    frames = list(container.decode(*container.streams))
    pictures = [f for f in frames if isinstance(f, av.VideoFrame)]
    sounds = [f for f in frames if isinstance(f, av.AudioFrame)]
    times = [picture.pts for picture in pictures]

    assert len(pictures) == len(video)
    assert len(sounds) == len(audio)
    assert pictures[0].key_frame
    assert times == sorted(times)
    assert len(set(times)) == len(times)
