"""H.264 and AAC codec configuration records as FLV sequence headers carry them.

``parse_avc_config`` reads an AVCDecoderConfigurationRecord (ISO/IEC 14496-15
5.3.3.1) and the picture size from its first sequence parameter set (ITU-T
H.264 7.3.2.1.1). ``parse_aac_config`` reads an AudioSpecificConfig
(ISO/IEC 14496-3 1.6.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from realcast_box.media.flv import InvalidTag


class InvalidCodecConfig(InvalidTag):
    """An avcC record, SPS or AudioSpecificConfig is malformed."""


@dataclass(frozen=True)
class AvcConfig:
    """An H.264 decoder configuration and the picture size its SPS declares."""

    record: bytes
    profile: int
    compatibility: int
    level: int
    nal_length_size: int
    width: int
    height: int
    sps: list[bytes] = field(hash=False)
    pps: list[bytes] = field(hash=False)

    @property
    def codec_string(self) -> str:
        """RFC 6381 codecs value, for example ``avc1.64001f``."""
        return f"avc1.{self.profile:02x}{self.compatibility:02x}{self.level:02x}"

    @property
    def profile_name(self) -> str:
        """The H.264 profile (Annex A), for example ``High``."""
        if self.profile == 66 and self.compatibility & 0x40:
            return "Constrained Baseline"  # constraint_set1_flag
        return _AVC_PROFILE_NAMES.get(self.profile, f"profile {self.profile}")


@dataclass(frozen=True)
class AacConfig:
    """An AAC AudioSpecificConfig and the values the packager needs from it.

    ``sample_rate`` is the core AAC rate, at which one frame is 1024 samples;
    with explicitly signalled SBR (HE-AAC) the decoder outputs twice that.
    ``channels`` is 0 when a program config element defines the layout.
    """

    config: bytes
    object_type: int
    sample_rate: int
    channels: int

    @property
    def codec_string(self) -> str:
        """RFC 6381 codecs value, for example ``mp4a.40.2``."""
        return f"mp4a.40.{self.object_type}"

    @property
    def profile_name(self) -> str:
        """The audio object type (ISO/IEC 14496-3 1.5.1.1), for example ``LC``."""
        return _AAC_OBJECT_TYPE_NAMES.get(
            self.object_type, f"object type {self.object_type}"
        )


# profile_idc values (ITU-T H.264 Annex A) and their names.
_AVC_PROFILE_NAMES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
    44: "CAVLC 4:4:4 Intra",
}
# Audio object types (ISO/IEC 14496-3 1.5.1.1) that AAC encoders send.
_AAC_OBJECT_TYPE_NAMES = {
    1: "Main",
    2: "LC",
    3: "SSR",
    4: "LTP",
    5: "HE-AAC",
    23: "LD",
    29: "HE-AAC v2",
    39: "ELD",
}


class BitReader:
    """MSB-first bit reader over one RBSP (emulation prevention removed)."""

    def __init__(self, data: bytes, structure: str) -> None:
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self._position = 0
        self._structure = structure

    def bits(self, count: int) -> int:
        if self._position + count > self._size:
            raise InvalidCodecConfig(
                f"invalid {self._structure}: truncated after {self._size // 8} bytes"
            )
        self._position += count
        shift = self._size - self._position
        return (self._value >> shift) & ((1 << count) - 1)

    def flag(self) -> bool:
        return self.bits(1) == 1

    def ue(self) -> int:
        """Read an unsigned Exp-Golomb code (H.264 9.1)."""
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
            if zeros > 31:
                raise InvalidCodecConfig(
                    f"invalid {self._structure}: Exp-Golomb code longer than 32 bits"
                )
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        """Read a signed Exp-Golomb code."""
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)


def parse_avc_config(record: bytes) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord (the avcC box body).

    Raises ``InvalidCodecConfig`` (an ``InvalidTag``) naming the bad field.
    """
    if len(record) < 7:
        raise InvalidCodecConfig(
            f"invalid avcC record: expected at least 7 bytes, got {len(record)}"
        )
    if record[0] != 1:
        raise InvalidCodecConfig(
            f"invalid avcC record: configurationVersion {record[0]}, expected 1"
        )
    nal_length_size = (record[4] & 0x03) + 1
    if nal_length_size == 3:
        raise InvalidCodecConfig(
            "invalid avcC record: NAL unit length size 3, expected 1, 2 or 4"
        )

    sps, position = _read_parameter_sets(record, 5, 0x1F, "SPS")
    pps, _ = _read_parameter_sets(record, position, 0xFF, "PPS")
    if not sps or not pps:
        raise InvalidCodecConfig(
            f"invalid avcC record: {len(sps)} SPS and {len(pps)} PPS, "
            "expected at least one of each"
        )
    width, height = parse_sps_dimensions(sps[0])
    return AvcConfig(
        record=bytes(record),
        profile=record[1],
        compatibility=record[2],
        level=record[3],
        nal_length_size=nal_length_size,
        width=width,
        height=height,
        sps=sps,
        pps=pps,
    )


def _read_parameter_sets(
    record: bytes, position: int, count_mask: int, kind: str
) -> tuple[list[bytes], int]:
    if position >= len(record):
        raise InvalidCodecConfig(f"invalid avcC record: missing {kind} count")
    count = record[position] & count_mask
    position += 1
    units = []
    for _ in range(count):
        if position + 2 > len(record):
            raise InvalidCodecConfig(f"invalid avcC record: truncated {kind} length")
        length = int.from_bytes(record[position : position + 2], "big")
        position += 2
        if length == 0 or position + length > len(record):
            raise InvalidCodecConfig(
                f"invalid avcC record: {kind} of {length} bytes does not fit "
                f"in the {len(record)}-byte record"
            )
        units.append(bytes(record[position : position + length]))
        position += length
    return units, position


# profile_idc values whose SPS carries chroma_format_idc, bit depths and
# scaling matrices (H.264 7.3.2.1.1).
_HIGH_PROFILES = frozenset(
    {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
)
_SPS_NAL_TYPE = 7
# H.264 level 6.2 allows frames of at most 139,264 macroblocks, and its
# Annex A caps each side at sqrt(8 * MaxFS) macroblocks: 1,055, or 16,880 px.
MAX_PICTURE_SIDE = 16880


def parse_sps_dimensions(sps: bytes) -> tuple[int, int]:
    """Return the cropped (width, height) in pixels that an H.264 SPS declares."""
    if not sps or sps[0] & 0x1F != _SPS_NAL_TYPE:
        first = f"0x{sps[0]:02x}" if sps else "nothing"
        raise InvalidCodecConfig(
            f"invalid SPS: NAL header {first}, expected NAL unit type 7"
        )
    reader = BitReader(remove_emulation_prevention(sps[1:]), "SPS")
    profile_idc = reader.bits(8)
    reader.bits(16)  # constraint flags, reserved bits, level_idc
    reader.ue()  # seq_parameter_set_id

    chroma_format_idc = 1
    separate_colour_plane = False
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = reader.ue()
        if chroma_format_idc > 3:
            raise InvalidCodecConfig(
                f"invalid SPS: chroma_format_idc {chroma_format_idc}, expected 0 to 3"
            )
        if chroma_format_idc == 3:
            separate_colour_plane = reader.flag()
        reader.ue()  # bit_depth_luma_minus8
        reader.ue()  # bit_depth_chroma_minus8
        reader.flag()  # qpprime_y_zero_transform_bypass_flag
        if reader.flag():  # seq_scaling_matrix_present_flag
            _skip_scaling_lists(reader, 8 if chroma_format_idc != 3 else 12)

    reader.ue()  # log2_max_frame_num_minus4
    _skip_picture_order_count(reader)
    reader.ue()  # max_num_ref_frames
    reader.flag()  # gaps_in_frame_num_value_allowed_flag
    width_in_macroblocks = reader.ue() + 1
    height_in_map_units = reader.ue() + 1
    frame_mbs_only = reader.flag()
    if not frame_mbs_only:
        reader.flag()  # mb_adaptive_frame_field_flag
    reader.flag()  # direct_8x8_inference_flag

    width = width_in_macroblocks * 16
    height = height_in_map_units * 16 * (1 if frame_mbs_only else 2)
    if reader.flag():  # frame_cropping_flag
        crop = [reader.ue() for _ in range(4)]  # left, right, top, bottom
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        crop_x, crop_y = _crop_units(chroma_array_type, frame_mbs_only)
        width -= crop_x * (crop[0] + crop[1])
        height -= crop_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise InvalidCodecConfig(
            f"invalid SPS: cropping leaves a {width}x{height} picture"
        )
    if max(width, height) > MAX_PICTURE_SIDE:
        raise InvalidCodecConfig(
            f"invalid SPS: {width}x{height} pictures are larger than H.264 allows "
            f"(at most {MAX_PICTURE_SIDE} pixels on a side)"
        )
    return width, height


def _skip_scaling_lists(reader: BitReader, count: int) -> None:
    for index in range(count):
        if not reader.flag():  # seq_scaling_list_present_flag
            continue
        size = 16 if index < 6 else 64
        last_scale = next_scale = 8
        for _ in range(size):
            if next_scale != 0:
                next_scale = (last_scale + reader.se() + 256) % 256
            last_scale = next_scale if next_scale != 0 else last_scale


def _skip_picture_order_count(reader: BitReader) -> None:
    pic_order_cnt_type = reader.ue()
    if pic_order_cnt_type == 0:
        reader.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif pic_order_cnt_type == 1:
        reader.flag()  # delta_pic_order_always_zero_flag
        reader.se()  # offset_for_non_ref_pic
        reader.se()  # offset_for_top_to_bottom_field
        for _ in range(reader.ue()):  # num_ref_frames_in_pic_order_cnt_cycle
            reader.se()
    elif pic_order_cnt_type != 2:
        raise InvalidCodecConfig(
            f"invalid SPS: pic_order_cnt_type {pic_order_cnt_type}, expected 0 to 2"
        )


def _crop_units(chroma_array_type: int, frame_mbs_only: bool) -> tuple[int, int]:
    # CropUnitX and CropUnitY from H.264 equations 7-19 to 7-22.
    field_factor = 1 if frame_mbs_only else 2
    if chroma_array_type == 0:
        return 1, field_factor
    sub_width = 1 if chroma_array_type == 3 else 2
    sub_height = 2 if chroma_array_type == 1 else 1
    return sub_width, sub_height * field_factor


def remove_emulation_prevention(data: bytes) -> bytes:
    """Drop the 0x03 byte of each 0x000003 sequence (H.264 7.4.1)."""
    if b"\x00\x00\x03" not in data:
        return data
    output = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        output.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(output)


# samplingFrequencyIndex values 0 to 12 (ISO/IEC 14496-3 1.6.3.4).
_AAC_SAMPLE_RATES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000,
    22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
# channelConfiguration to channel count; 0 defers to a program config element.
_AAC_CHANNELS = {
    0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8,
}  # fmt: skip


def parse_aac_config(asc: bytes) -> AacConfig:
    """Parse an AAC AudioSpecificConfig.

    Raises ``InvalidCodecConfig`` (an ``InvalidTag``) naming the bad field.
    """
    if len(asc) < 2:
        raise InvalidCodecConfig(
            f"invalid AudioSpecificConfig: expected at least 2 bytes, got {len(asc)}"
        )
    reader = BitReader(asc, "AudioSpecificConfig")
    object_type = _read_object_type(reader)
    if object_type == 0:
        raise InvalidCodecConfig("invalid AudioSpecificConfig: audio object type 0")
    sample_rate = _read_sample_rate(reader)
    channel_configuration = reader.bits(4)
    if channel_configuration not in _AAC_CHANNELS:
        raise InvalidCodecConfig(
            "invalid AudioSpecificConfig: channelConfiguration "
            f"{channel_configuration} is reserved"
        )
    return AacConfig(
        config=bytes(asc),
        object_type=object_type,
        sample_rate=sample_rate,
        channels=_AAC_CHANNELS[channel_configuration],
    )


def _read_object_type(reader: BitReader) -> int:
    object_type = reader.bits(5)
    if object_type == 31:
        object_type = 32 + reader.bits(6)
    return object_type


def _read_sample_rate(reader: BitReader) -> int:
    index = reader.bits(4)
    if index == 15:
        rate = reader.bits(24)
    elif index < len(_AAC_SAMPLE_RATES):
        rate = _AAC_SAMPLE_RATES[index]
    else:
        raise InvalidCodecConfig(
            f"invalid AudioSpecificConfig: samplingFrequencyIndex {index} is reserved"
        )
    if rate == 0:
        raise InvalidCodecConfig("invalid AudioSpecificConfig: sample rate 0")
    return rate


# NAL unit types of ITU-T H.264 table 7-1 that the Annex B helpers handle.
NAL_SPS = 7
NAL_PPS = 8
NAL_ACCESS_UNIT_DELIMITER = 9


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream into NAL units, without their start codes."""
    units = []
    start = _next_start_code(data, 0)
    while start is not None:
        begin = start[1]
        following = _next_start_code(data, begin)
        end = following[0] if following is not None else len(data)
        unit = data[begin:end]
        if unit:
            units.append(unit)
        start = following
    return units


def _next_start_code(data: bytes, position: int) -> tuple[int, int] | None:
    """Return (where the start code begins, where its NAL unit begins) or None."""
    found = data.find(b"\x00\x00\x01", position)
    if found < 0:
        return None
    begin = found
    # A four-byte start code's leading zero belongs to the start code. Zero
    # bytes that end a NAL unit (trailing_zero_8bits) go with it too.
    while begin > position and data[begin - 1] == 0:
        begin -= 1
    return begin, found + 3


def annexb_to_length_prefixed(data: bytes) -> bytes:
    """Convert an Annex B access unit to 4-byte length-prefixed NAL units.

    Parameter sets and access unit delimiters are left out: the init
    segment's avcC record carries the parameter sets.
    """
    parts = []
    for unit in split_annexb(data):
        if unit[0] & 0x1F in (NAL_SPS, NAL_PPS, NAL_ACCESS_UNIT_DELIMITER):
            continue
        parts.append(len(unit).to_bytes(4, "big"))
        parts.append(unit)
    return b"".join(parts)


def avc_config_from_annexb(data: bytes) -> AvcConfig:
    """Build an AvcConfig from the SPS and PPS in an Annex B byte stream.

    Encoders opened with a global header put their parameter sets in
    extradata this way. Raises ``InvalidCodecConfig`` without both.
    """
    units = split_annexb(data)
    sps = [unit for unit in units if unit[0] & 0x1F == NAL_SPS]
    pps = [unit for unit in units if unit[0] & 0x1F == NAL_PPS]
    if not sps or not pps or len(sps[0]) < 4:
        raise InvalidCodecConfig(
            f"invalid parameter sets: {len(sps)} SPS and {len(pps)} PPS, "
            "expected at least one of each"
        )
    record = bytearray([1, sps[0][1], sps[0][2], sps[0][3], 0xFF, 0xE0 | len(sps)])
    for unit in sps:
        record += len(unit).to_bytes(2, "big") + unit
    record.append(len(pps))
    for unit in pps:
        record += len(unit).to_bytes(2, "big") + unit
    return parse_avc_config(bytes(record))
