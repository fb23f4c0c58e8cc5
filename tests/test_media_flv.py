"""FLV tag parsing and the H.264 / AAC configs that sequence headers carry.

Configs come from real libx264 and FFmpeg AAC output muxed to FLV by PyAV.
"""

from __future__ import annotations

import fractions
import io

import av
import numpy as np
import pytest
from flvfile import AUDIO_TAG, VIDEO_TAG, encode_flv, read_tags

from realcast_box.errors import RealcastError
from realcast_box.media.codecs import (
    InvalidCodecConfig,
    parse_aac_config,
    parse_avc_config,
    parse_sps_dimensions,
    remove_emulation_prevention,
)
from realcast_box.media.flv import (
    InvalidTag,
    UnsupportedCodec,
    parse_audio_tag,
    parse_video_tag,
)


def x264_tags(
    width: int, height: int, *, pix_fmt: str = "yuv420p", preset: str, **options: str
) -> tuple[bytes, bytes]:
    """Encode one black frame; return its FLV sequence header and keyframe payloads."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flv") as output:
        stream = output.add_stream(
            "libx264", rate=30, options={"preset": preset, **options}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        image = np.zeros((height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
            format=pix_fmt
        )
        frame.pts = 0
        frame.time_base = fractions.Fraction(1, 30)
        output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    video = [tag.payload for tag in read_tags(buffer.getvalue()) if tag.kind == 9]
    return video[0], video[1]


def x264_avcc(width: int, height: int, **kwargs: str) -> bytes:
    header, _ = x264_tags(width, height, **kwargs)
    return parse_video_tag(header).data


# Helpers that build bitstreams, written from the H.264 syntax tables.


def bytes_from_bits(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def exp_golomb(value: int, signed: bool = False) -> str:
    if signed:
        value = 2 * value - 1 if value > 0 else -2 * value
    code = format(value + 1, "b")
    return "0" * (len(code) - 1) + code


def add_emulation_prevention(rbsp: bytes) -> bytes:
    output = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            output.append(3)
            zeros = 0
        output.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(output)


def sps_from_bits(bits: str) -> bytes:
    """Return an SPS NAL unit for the RBSP ``bits`` before the stop bit."""
    return b"\x67" + add_emulation_prevention(bytes_from_bits(bits + "1"))


def with_flat_scaling_lists(sps: bytes) -> bytes:
    """Rewrite a High profile SPS so it carries explicit flat scaling lists."""
    bits = "".join(format(b, "08b") for b in remove_emulation_prevention(sps[1:]))
    position = 24  # profile_idc, constraint flags, level_idc
    for _ in range(4):  # sps_id, chroma_format_idc, two bit depths
        zeros = bits.index("1", position) - position
        position += 2 * zeros + 1
    position += 1  # qpprime_y_zero_transform_bypass_flag
    assert bits[position] == "0", "x264 wrote scaling lists after all"

    lists = ""
    for index in range(8):
        if index % 3 == 2:
            lists += "0"  # not present: fall back to the previous list
            continue
        size = 16 if index < 6 else 64
        # Deltas 8, 0, 0, ... make every entry 16, which is Flat_4x4/8x8.
        lists += "1" + exp_golomb(8, signed=True) + exp_golomb(0) * (size - 1)
    rest = bits[position + 1 : bits.rindex("1")]  # up to the stop bit
    return sps_from_bits(bits[:position] + "1" + lists + rest)


def replace_sps(record: bytes, sps: bytes) -> bytes:
    old_length = int.from_bytes(record[6:8], "big")
    return record[:6] + len(sps).to_bytes(2, "big") + sps + record[8 + old_length :]


def decode_keyframe(record: bytes, access_unit: bytes) -> av.VideoFrame:
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = record
    frames = decoder.decode(av.Packet(access_unit))
    frames += decoder.decode(None)
    assert len(frames) == 1
    return frames[0]


@pytest.fixture(scope="module")
def av_tags() -> list:
    return read_tags(encode_flv(seconds=1.0, gop=15, bframes=2))


# FLV video tags.


def test_parse_video_tag_sequence_header(av_tags: list) -> None:
    payload = next(t.payload for t in av_tags if t.kind == VIDEO_TAG)

    tag = parse_video_tag(payload)

    assert tag.is_sequence_header
    assert tag.data == payload[5:]
    assert tag.data[0] == 1  # configurationVersion of the avcC record


def test_parse_video_tag_keyframe(av_tags: list) -> None:
    payload = [t.payload for t in av_tags if t.kind == VIDEO_TAG][1]

    tag = parse_video_tag(payload)

    assert tag.keyframe
    assert not tag.is_sequence_header
    assert tag.data == payload[5:]


def test_parse_video_tag_b_frames_have_composition_time(av_tags: list) -> None:
    frames = [
        parse_video_tag(t.payload)
        for t in av_tags
        if t.kind == VIDEO_TAG and t.is_media_frame
    ]

    assert not all(frame.keyframe for frame in frames)
    assert any(frame.composition_time > 0 for frame in frames)


def test_parse_video_tag_negative_composition_time() -> None:
    tag = parse_video_tag(bytes([0x27, 0x01, 0xFF, 0xFF, 0xDF]) + b"\x00\x00\x00\x01A")

    assert tag.composition_time == -33
    assert not tag.keyframe


def test_parse_video_tag_end_of_sequence() -> None:
    tag = parse_video_tag(bytes([0x17, 0x02, 0, 0, 0]))

    assert tag.is_end_of_sequence
    assert tag.data == b""


def test_parse_video_tag_command_frame_carries_no_data() -> None:
    tag = parse_video_tag(bytes([0x57, 0x00]))

    assert tag.data == b""
    assert not tag.is_sequence_header


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (bytes([0x17, 0x01, 0x00]), "at least 5 bytes, got 3"),
        (bytes([0x17, 0x05, 0, 0, 0]), "AVCPacketType 5"),
        (bytes([0x90]) + b"avc", "at least 5 bytes"),
        (bytes([0x91]) + b"avc1\x00", "at least 8 bytes"),
        (bytes([0x97]) + b"avc1", "VideoPacketType 7"),
    ],
)
def test_parse_video_tag_malformed(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidTag, match=message):
        parse_video_tag(payload)


@pytest.mark.parametrize(
    ("first_byte", "name"),
    [
        (0x12, "Sorenson H.263"),
        (0x13, "Screen video"),
        (0x14, "On2 VP6"),
        (0x15, "On2 VP6 with alpha channel"),
        (0x16, "Screen video version 2"),
        (0x1C, "HEVC"),
    ],
)
def test_parse_video_tag_legacy_codec_unsupported(first_byte: int, name: str) -> None:
    with pytest.raises(UnsupportedCodec) as raised:
        parse_video_tag(bytes([first_byte, 0, 0, 0, 0, 0]))

    assert str(raised.value) == f"video codec {name} is not supported; send H.264"


@pytest.mark.parametrize(
    ("fourcc", "name"),
    [(b"hvc1", "HEVC (hvc1)"), (b"av01", "AV1 (av01)"), (b"vp09", "VP9 (vp09)")],
)
def test_parse_video_tag_enhanced_codec_unsupported(fourcc: bytes, name: str) -> None:
    # Enhanced RTMP: IsExHeader, keyframe, SequenceStart, then the FourCC.
    payload = bytes([0x80 | 0x10 | 0x00]) + fourcc + b"\x01\x02\x03"

    with pytest.raises(UnsupportedCodec) as raised:
        parse_video_tag(payload)

    assert str(raised.value) == f"video codec {name} is not supported; send H.264"


def test_parse_video_tag_enhanced_unknown_fourcc_named() -> None:
    with pytest.raises(UnsupportedCodec, match="'abcd'"):
        parse_video_tag(bytes([0x91]) + b"abcd" + bytes(4))


def test_parse_video_tag_enhanced_multitrack_unsupported() -> None:
    with pytest.raises(UnsupportedCodec, match="multitrack"):
        parse_video_tag(bytes([0x96, 0x00]) + b"avc1" + bytes(4))


def test_parse_video_tag_enhanced_avc_sequence_start(av_tags: list) -> None:
    record = parse_video_tag(av_tags[1].payload).data

    tag = parse_video_tag(bytes([0x90]) + b"avc1" + record)

    assert tag.is_sequence_header
    assert tag.data == record


def test_parse_video_tag_enhanced_avc_coded_frames() -> None:
    tag = parse_video_tag(bytes([0x91]) + b"avc1" + b"\x00\x00\x42" + b"NALU")

    assert tag.keyframe
    assert tag.composition_time == 0x42
    assert tag.data == b"NALU"


def test_parse_video_tag_enhanced_coded_frames_x() -> None:
    tag = parse_video_tag(bytes([0xA3]) + b"avc1" + b"NALU")

    assert not tag.keyframe
    assert tag.composition_time == 0
    assert tag.data == b"NALU"


def test_invalid_tag_is_value_error() -> None:
    assert issubclass(InvalidTag, ValueError)
    assert issubclass(InvalidTag, RealcastError)
    assert issubclass(UnsupportedCodec, RealcastError)


# FLV audio tags.


def test_parse_audio_tag_sequence_header(av_tags: list) -> None:
    payload = next(t.payload for t in av_tags if t.kind == AUDIO_TAG)

    tag = parse_audio_tag(payload)

    assert tag.is_sequence_header
    assert tag.data == payload[2:]


def test_parse_audio_tag_raw_frame(av_tags: list) -> None:
    payload = [t.payload for t in av_tags if t.kind == AUDIO_TAG][1]

    tag = parse_audio_tag(payload)

    assert not tag.is_sequence_header
    assert tag.data == payload[2:]


@pytest.mark.parametrize(
    ("sound_format", "name"),
    [
        (2, "MP3"),
        (11, "Speex"),
        (6, "Nellymoser"),
        (4, "Nellymoser 16 kHz mono"),
        (7, "G.711 A-law"),
        (8, "G.711 mu-law"),
        (3, "Linear PCM (little endian)"),
        (1, "ADPCM"),
        (14, "MP3 8 kHz"),
    ],
)
def test_parse_audio_tag_codec_unsupported(sound_format: int, name: str) -> None:
    with pytest.raises(UnsupportedCodec) as raised:
        parse_audio_tag(bytes([(sound_format << 4) | 0x0F, 0x01, 0x02]))

    assert str(raised.value) == f"audio codec {name} is not supported; send AAC"


def test_parse_audio_tag_enhanced_opus_unsupported() -> None:
    with pytest.raises(UnsupportedCodec, match=r"Opus \(Opus\)"):
        parse_audio_tag(bytes([0x90]) + b"Opus" + b"\x01")


def test_parse_audio_tag_enhanced_aac() -> None:
    tag = parse_audio_tag(bytes([0x90]) + b"mp4a" + b"\x12\x10")

    assert tag.is_sequence_header
    assert tag.data == b"\x12\x10"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (bytes([0xAF]), "at least 2 bytes, got 1"),
        (bytes([0xAF, 0x02, 0x00]), "AACPacketType 2"),
        (bytes([0x90]) + b"mp4", "at least 5 bytes, got 4"),
        (bytes([0x93]) + b"mp4a", "AudioPacketType 3"),
    ],
)
def test_parse_audio_tag_malformed(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidTag, match=message):
        parse_audio_tag(payload)


# H.264 avcC and SPS.


@pytest.mark.parametrize(
    ("width", "height", "preset", "profile", "profile_idc"),
    [
        (1920, 1080, "fast", "high", 100),
        (1280, 720, "fast", "main", 77),
        (854, 480, "ultrafast", "baseline", 66),
        (320, 240, "ultrafast", "baseline", 66),
        (1366, 768, "fast", "high", 100),
    ],
)
def test_parse_avc_config_x264_profiles(
    width: int, height: int, preset: str, profile: str, profile_idc: int
) -> None:
    record = x264_avcc(width, height, preset=preset, profile=profile)

    config = parse_avc_config(record)

    assert (config.width, config.height) == (width, height)
    assert config.profile == profile_idc
    assert config.record == record


@pytest.mark.parametrize(
    ("pix_fmt", "profile_idc"), [("yuv422p", 122), ("yuv444p", 244)]
)
def test_parse_avc_config_chroma_formats(pix_fmt: str, profile_idc: int) -> None:
    # 1080 rows are coded as 1088, so the crop unit of each chroma format
    # decides whether the bottom crop comes out right.
    record = x264_avcc(1920, 1080, pix_fmt=pix_fmt, preset="fast")

    config = parse_avc_config(record)

    assert config.profile == profile_idc
    assert (config.width, config.height) == (1920, 1080)


def test_parse_avc_config_odd_size_444() -> None:
    record = x264_avcc(426, 242, pix_fmt="yuv444p", preset="fast")

    config = parse_avc_config(record)

    assert (config.width, config.height) == (426, 242)


def test_parse_avc_config_interlaced() -> None:
    record = x264_avcc(1920, 1080, preset="fast", **{"x264-params": "interlaced=1"})

    config = parse_avc_config(record)

    assert (config.width, config.height) == (1920, 1080)


def test_parse_avc_config_fields() -> None:
    record = x264_avcc(1280, 720, preset="fast", profile="high")

    config = parse_avc_config(record)

    assert config.codec_string == "avc1.64001f"
    assert config.nal_length_size == 4
    assert len(config.sps) == 1
    assert len(config.pps) == 1
    assert config.sps[0][0] & 0x1F == 7


def test_parse_avc_config_scaling_lists_decoded_by_ffmpeg() -> None:
    # The libx264 in PyAV 18.1 writes no SPS scaling lists (not even with
    # cqm=jvt), so add explicit flat lists to its SPS. FFmpeg's decoder must
    # still accept the stream, proving that the rewritten SPS is valid, and
    # the parser must find the same size.
    header, keyframe = x264_tags(1920, 1080, preset="fast", profile="high")
    original = parse_video_tag(header).data
    sps = parse_avc_config(original).sps[0]
    record = replace_sps(original, with_flat_scaling_lists(sps))

    config = parse_avc_config(record)
    decoded = decode_keyframe(record, parse_video_tag(keyframe).data)

    assert (config.width, config.height) == (1920, 1080)
    assert (decoded.width, decoded.height) == (1920, 1080)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"\x01\x64\x00", "at least 7 bytes, got 3"),
        (b"\x02\x64\x00\x1f\xff\xe1\x00", "configurationVersion 2"),
        (b"\x01\x64\x00\x1f\xfe\xe1\x00\x04", "NAL unit length size 3"),
        (b"\x01\x64\x00\x1f\xff\xe0\x00", "0 SPS and 0 PPS"),
        (b"\x01\x64\x00\x1f\xff\xe1\x00\x09\x67", "does not fit"),
        (b"\x01\x64\x00\x1f\xff\xe1\x00\x01\x68\x01\x00\x01\x68", "NAL unit type 7"),
        (b"\x01\x64\x00\x1f\xff\xe1\x00\x02\x67\x64\x01\x00\x01\x68", "truncated"),
    ],
)
def test_parse_avc_config_malformed(record: bytes, message: str) -> None:
    with pytest.raises(InvalidCodecConfig, match=message):
        parse_avc_config(record)


def test_invalid_codec_config_is_invalid_tag() -> None:
    assert issubclass(InvalidCodecConfig, InvalidTag)


def test_remove_emulation_prevention() -> None:
    data = b"\x01\x00\x00\x03\x00\x00\x00\x03\x01\x00\x03"

    assert remove_emulation_prevention(data) == b"\x01\x00\x00\x00\x00\x00\x01\x00\x03"


def test_parse_sps_dimensions_emulation_prevention() -> None:
    # 2**21 macroblock columns code as a run of 21 zero bits that ends in
    # 0x00 0x00 0x02, which an encoder must escape as 0x00 0x00 0x03 0x02.
    sps = sps_from_bits(
        "01000010" + "00000000" + "00011111"  # baseline, level 3.1
        "1"  # seq_parameter_set_id 0
        "1"  # log2_max_frame_num_minus4 0
        "011"  # pic_order_cnt_type 2
        "010"  # max_num_ref_frames 1
        "0"  # gaps_in_frame_num_value_allowed_flag
        + exp_golomb(2**21 - 1)  # pic_width_in_mbs_minus1
        + exp_golomb(0)  # pic_height_in_map_units_minus1
        + "1"  # frame_mbs_only_flag
        "1"  # direct_8x8_inference_flag
        "0"  # frame_cropping_flag
        "0"  # vui_parameters_present_flag
    )

    assert b"\x00\x00\x03" in sps
    # The size is read through the escape, and is then too large for H.264.
    with pytest.raises(InvalidCodecConfig, match=f"{2**21 * 16}x16"):
        parse_sps_dimensions(sps)


def baseline_sps(width_in_macroblocks: int, height_in_macroblocks: int) -> bytes:
    return sps_from_bits(
        "01000010" + "00000000" + "00011111"  # baseline, level 3.1
        "1"  # seq_parameter_set_id 0
        "1"  # log2_max_frame_num_minus4 0
        "011"  # pic_order_cnt_type 2
        "010"  # max_num_ref_frames 1
        "0"  # gaps_in_frame_num_value_allowed_flag
        + exp_golomb(width_in_macroblocks - 1)
        + exp_golomb(height_in_macroblocks - 1)
        + "1"  # frame_mbs_only_flag
        "1"  # direct_8x8_inference_flag
        "0"  # frame_cropping_flag
        "0"  # vui_parameters_present_flag
    )


def test_parse_sps_dimensions_largest_allowed() -> None:
    assert parse_sps_dimensions(baseline_sps(1055, 1)) == (16880, 16)


def test_parse_sps_dimensions_too_tall_rejected() -> None:
    with pytest.raises(InvalidCodecConfig, match="16x16896"):
        parse_sps_dimensions(baseline_sps(1, 1056))


# AAC AudioSpecificConfig.


@pytest.mark.parametrize("sample_rate", [44100, 48000])
def test_parse_aac_config_ffmpeg(sample_rate: int) -> None:
    tags = read_tags(encode_flv(seconds=0.2, video=False, sample_rate=sample_rate))
    asc = parse_audio_tag(tags[1].payload).data

    config = parse_aac_config(asc)

    assert config.object_type == 2
    assert config.sample_rate == sample_rate
    assert config.channels == 2
    assert config.codec_string == "mp4a.40.2"
    assert config.config == asc


def test_parse_aac_config_he_aac() -> None:
    # Object type 5 (SBR), 24 kHz core, stereo, extension rate 48 kHz, LC.
    config = parse_aac_config(bytes_from_bits("0010101100010001100010"))

    assert config.codec_string == "mp4a.40.5"
    assert config.sample_rate == 24000
    assert config.channels == 2


def test_parse_aac_config_explicit_sample_rate() -> None:
    asc = bytes_from_bits("000101111" + format(22050, "024b") + "0001")

    config = parse_aac_config(asc)

    assert config.sample_rate == 22050
    assert config.channels == 1


def test_parse_aac_config_escaped_object_type() -> None:
    # 31 escapes to 32 + 6 bits; 39 is ER AAC ELD.
    config = parse_aac_config(bytes_from_bits("1111100011100110010"))

    assert config.object_type == 39
    assert config.sample_rate == 48000


def test_parse_aac_config_seven_one_channels() -> None:
    config = parse_aac_config(bytes_from_bits("0001000110111000"))

    assert config.channels == 8


@pytest.mark.parametrize(
    ("asc", "message"),
    [
        (b"\x12", "at least 2 bytes, got 1"),
        (bytes_from_bits("0000000110010000"), "object type 0"),
        (bytes_from_bits("0001011010010000"), "samplingFrequencyIndex 13"),
        (bytes_from_bits("0001000111000000"), "channelConfiguration 8"),
        (bytes_from_bits("0001011110000"), "truncated"),
    ],
)
def test_parse_aac_config_malformed(asc: bytes, message: str) -> None:
    with pytest.raises(InvalidCodecConfig, match=message):
        parse_aac_config(asc)
