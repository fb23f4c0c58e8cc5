"""FLV audio and video tag payloads as RTMP carries them (FLV spec v10, annex E).

Only H.264 video and AAC audio can be packaged without re-encoding, so every
other codec raises ``UnsupportedCodec`` with the codec's name. Enhanced RTMP
tags (the FourCC form of the tag header) are read far enough to name the
codec. Their ``avc1`` and ``mp4a`` forms are accepted like the legacy headers.
"""

from __future__ import annotations

from dataclasses import dataclass

from realcast_box.errors import RealcastError

# FLV VIDEODATA CodecID values other than AVC (7).
_VIDEO_CODEC_NAMES = {
    1: "JPEG",
    2: "Sorenson H.263",
    3: "Screen video",
    4: "On2 VP6",
    5: "On2 VP6 with alpha channel",
    6: "Screen video version 2",
    # 12 and 13 are unofficial extensions for HEVC and AV1 that some
    # encoders send instead of the enhanced RTMP FourCC header.
    12: "HEVC",
    13: "AV1",
}

# Enhanced RTMP video FourCCs.
_VIDEO_FOURCC_NAMES = {
    b"hvc1": "HEVC (hvc1)",
    b"av01": "AV1 (av01)",
    b"vp09": "VP9 (vp09)",
    b"vp08": "VP8 (vp08)",
}

# FLV AUDIODATA SoundFormat values other than AAC (10).
_AUDIO_FORMAT_NAMES = {
    0: "Linear PCM (platform endian)",
    1: "ADPCM",
    2: "MP3",
    3: "Linear PCM (little endian)",
    4: "Nellymoser 16 kHz mono",
    5: "Nellymoser 8 kHz mono",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    11: "Speex",
    14: "MP3 8 kHz",
    15: "device-specific sound",
}

# Enhanced RTMP audio FourCCs.
_AUDIO_FOURCC_NAMES = {
    b"Opus": "Opus (Opus)",
    b"fLaC": "FLAC (fLaC)",
    b"ac-3": "AC-3 (ac-3)",
    b"ec-3": "E-AC-3 (ec-3)",
    b".mp3": "MP3 (.mp3)",
}

_AVC_CODEC_ID = 7
_AAC_SOUND_FORMAT = 10
_EX_AUDIO_SOUND_FORMAT = 9
_VIDEO_EX_HEADER_BIT = 0x80
_KEY_FRAME = 1
_COMMAND_FRAME = 5

# AVCPacketType values of the legacy header.
_AVC_SEQUENCE_HEADER = 0
_AVC_NALU = 1
_AVC_END_OF_SEQUENCE = 2

# Enhanced RTMP VideoPacketType values.
_EX_SEQUENCE_START = 0
_EX_CODED_FRAMES = 1
_EX_SEQUENCE_END = 2
_EX_CODED_FRAMES_X = 3
_EX_METADATA = 4
_EX_MULTITRACK = 6

# Enhanced RTMP AudioPacketType values.
_EX_AUDIO_SEQUENCE_START = 0
_EX_AUDIO_CODED_FRAMES = 1
_EX_AUDIO_SEQUENCE_END = 2
_EX_AUDIO_MULTICHANNEL_CONFIG = 4
_EX_AUDIO_MULTITRACK = 5


class UnsupportedCodec(RealcastError):
    """The publisher sends a codec the box cannot package; the message names it."""


class InvalidTag(RealcastError, ValueError):
    """An FLV tag payload or codec configuration is malformed."""


# Tags are parsed once per media message, so they are slotted, not frozen.
# A frozen dataclass's __init__ took about four times as long (timeit, 3.11).
@dataclass(slots=True)
class VideoTag:
    """One H.264 video tag.

    ``data`` is the avcC record for a sequence header, length-prefixed NAL
    units for a frame, and empty for an end of sequence or a command frame
    (FLV frame type 5), which carry no picture.
    """

    keyframe: bool
    is_sequence_header: bool
    is_end_of_sequence: bool
    composition_time: int  # ms, signed: PTS minus DTS
    data: bytes


@dataclass(slots=True)
class AudioTag:
    """One AAC audio tag: an AudioSpecificConfig or one raw AAC frame.

    ``data`` is empty for enhanced RTMP packets that carry no audio.
    """

    is_sequence_header: bool
    data: bytes


def parse_video_tag(payload: bytes) -> VideoTag:
    """Parse an FLV VIDEODATA payload that carries H.264.

    Raises ``UnsupportedCodec`` for any other codec and ``InvalidTag`` for a
    payload that is too short or has an unknown packet type.
    """
    if not payload:
        raise InvalidTag("invalid video tag: empty payload")
    if payload[0] & _VIDEO_EX_HEADER_BIT:
        return _parse_enhanced_video(payload)

    frame_type = payload[0] >> 4
    codec_id = payload[0] & 0x0F
    if codec_id != _AVC_CODEC_ID:
        name = _VIDEO_CODEC_NAMES.get(codec_id, f"with FLV codec id {codec_id}")
        raise UnsupportedCodec(f"video codec {name} is not supported; send H.264")
    if frame_type == _COMMAND_FRAME:
        return VideoTag(False, False, False, 0, b"")
    if len(payload) < 5:
        raise InvalidTag(
            f"invalid H.264 video tag: expected at least 5 bytes, got {len(payload)}"
        )

    packet_type = payload[1]
    composition_time = _signed24(payload[2:5])
    if packet_type not in (_AVC_SEQUENCE_HEADER, _AVC_NALU, _AVC_END_OF_SEQUENCE):
        raise InvalidTag(
            f"invalid H.264 video tag: AVCPacketType {packet_type}, expected 0, 1 or 2"
        )
    # Positional arguments: keyframe, is_sequence_header, is_end_of_sequence,
    # composition_time, data.
    return VideoTag(
        frame_type == _KEY_FRAME,
        packet_type == _AVC_SEQUENCE_HEADER,
        packet_type == _AVC_END_OF_SEQUENCE,
        composition_time,
        b"" if packet_type == _AVC_END_OF_SEQUENCE else payload[5:],
    )


def _parse_enhanced_video(payload: bytes) -> VideoTag:
    if len(payload) < 5:
        raise InvalidTag(
            "invalid enhanced RTMP video tag: expected at least 5 bytes, "
            f"got {len(payload)}"
        )
    frame_type = (payload[0] >> 4) & 0x07
    packet_type = payload[0] & 0x0F
    if packet_type == _EX_MULTITRACK:
        raise UnsupportedCodec("multitrack video is not supported; send one track")
    fourcc = payload[1:5]
    if fourcc != b"avc1":
        raise UnsupportedCodec(
            f"video codec {_name_fourcc(fourcc, _VIDEO_FOURCC_NAMES)} "
            "is not supported; send H.264"
        )
    if frame_type == _COMMAND_FRAME or packet_type == _EX_METADATA:
        return VideoTag(False, False, False, 0, b"")

    keyframe = frame_type == _KEY_FRAME
    if packet_type == _EX_SEQUENCE_START:
        return VideoTag(keyframe, True, False, 0, payload[5:])
    if packet_type == _EX_SEQUENCE_END:
        return VideoTag(keyframe, False, True, 0, b"")
    if packet_type == _EX_CODED_FRAMES_X:
        return VideoTag(keyframe, False, False, 0, payload[5:])
    if packet_type == _EX_CODED_FRAMES:
        if len(payload) < 8:
            raise InvalidTag(
                "invalid enhanced RTMP video tag: expected at least 8 bytes "
                f"for coded frames, got {len(payload)}"
            )
        return VideoTag(keyframe, False, False, _signed24(payload[5:8]), payload[8:])
    raise InvalidTag(
        f"invalid enhanced RTMP video tag: VideoPacketType {packet_type}, "
        "expected 0 to 4"
    )


def parse_audio_tag(payload: bytes) -> AudioTag:
    """Parse an FLV AUDIODATA payload that carries AAC.

    Raises ``UnsupportedCodec`` for any other sound format and ``InvalidTag``
    for a payload that is too short or has an unknown packet type.
    """
    if not payload:
        raise InvalidTag("invalid audio tag: empty payload")
    sound_format = payload[0] >> 4
    if sound_format == _EX_AUDIO_SOUND_FORMAT:
        return _parse_enhanced_audio(payload)
    if sound_format != _AAC_SOUND_FORMAT:
        name = _AUDIO_FORMAT_NAMES.get(sound_format, f"with FLV format {sound_format}")
        raise UnsupportedCodec(f"audio codec {name} is not supported; send AAC")
    if len(payload) < 2:
        raise InvalidTag("invalid AAC audio tag: expected at least 2 bytes, got 1")

    packet_type = payload[1]
    if packet_type not in (0, 1):
        raise InvalidTag(
            f"invalid AAC audio tag: AACPacketType {packet_type}, expected 0 or 1"
        )
    return AudioTag(packet_type == 0, payload[2:])


def _parse_enhanced_audio(payload: bytes) -> AudioTag:
    if len(payload) < 5:
        raise InvalidTag(
            "invalid enhanced RTMP audio tag: expected at least 5 bytes, "
            f"got {len(payload)}"
        )
    packet_type = payload[0] & 0x0F
    if packet_type == _EX_AUDIO_MULTITRACK:
        raise UnsupportedCodec("multitrack audio is not supported; send one track")
    fourcc = payload[1:5]
    if fourcc != b"mp4a":
        raise UnsupportedCodec(
            f"audio codec {_name_fourcc(fourcc, _AUDIO_FOURCC_NAMES)} "
            "is not supported; send AAC"
        )
    if packet_type == _EX_AUDIO_SEQUENCE_START:
        return AudioTag(is_sequence_header=True, data=payload[5:])
    if packet_type == _EX_AUDIO_CODED_FRAMES:
        return AudioTag(is_sequence_header=False, data=payload[5:])
    if packet_type in (_EX_AUDIO_SEQUENCE_END, _EX_AUDIO_MULTICHANNEL_CONFIG):
        # Neither carries audio, and the AudioSpecificConfig already has
        # the channel layout.
        return AudioTag(is_sequence_header=False, data=b"")
    raise InvalidTag(
        f"invalid enhanced RTMP audio tag: AudioPacketType {packet_type}, "
        "expected 0, 1, 2 or 4"
    )


def _name_fourcc(fourcc: bytes, names: dict[bytes, str]) -> str:
    if fourcc in names:
        return names[fourcc]
    return f"with FourCC {fourcc.decode('latin-1')!r}"


def _signed24(raw: bytes) -> int:
    value = int.from_bytes(raw, "big")
    return value - (1 << 24) if value & 0x800000 else value
