"""Fragmented MP4 (ISO/IEC 14496-12) init and media segments for H.264 and AAC.

``init_segment`` writes ftyp and a moov with one trak per track and a mvex
that announces fragments. ``media_segment`` writes one moof with a traf per
track and one mdat after it; sample data offsets count from the start of the
moof (default-base-is-moof). A low-latency HLS part is the same moof and
mdat pair with fewer samples, so ``media_segment`` can write parts too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from realcast_box.media.codecs import AacConfig, AvcConfig

# Sample flags (ISO/IEC 14496-12 8.8.3.1): sample_depends_on 2 marks a sync
# sample, 1 plus sample_is_non_sync_sample marks one that needs others.
SYNC_SAMPLE_FLAGS = 0x02000000
NON_SYNC_SAMPLE_FLAGS = 0x01010000

_TFHD_DEFAULT_SAMPLE_FLAGS = 0x000020
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_SAMPLE_DURATION = 0x000100
_TRUN_SAMPLE_SIZE = 0x000200
_TRUN_SAMPLE_FLAGS = 0x000400
_TRUN_COMPOSITION_OFFSET = 0x000800

_UNITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = 0x55C4  # "und" packed as three 5-bit letters


@dataclass(frozen=True)
class Track:
    """One track of the presentation; H.264 when ``config`` is an AvcConfig."""

    track_id: int
    timescale: int
    config: AvcConfig | AacConfig

    @property
    def is_video(self) -> bool:
        return isinstance(self.config, AvcConfig)


# Not frozen, because one Sample is built per frame and a frozen dataclass's
# __init__ takes about three times as long (CPython 3.11).
@dataclass(slots=True)
class Sample:
    """One access unit: its bytes and timing in the track's timescale."""

    data: bytes
    duration: int
    keyframe: bool = True
    composition_offset: int = 0  # PTS minus DTS, may be negative


@dataclass(frozen=True)
class Fragment:
    """The samples of one track in one moof, starting at ``base_decode_time``."""

    track: Track
    base_decode_time: int
    samples: Sequence[Sample]


def box(kind: bytes, *payloads: bytes) -> bytes:
    body = b"".join(payloads)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payloads: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payloads)


def init_segment(tracks: Sequence[Track]) -> bytes:
    """Return ftyp and moov for ``tracks``, with no samples in the moov."""
    if not tracks:
        raise ValueError("an init segment needs at least one track")
    # The iso5 brand covers the default-base-is-moof flag that tfhd uses.
    ftyp = box(b"ftyp", b"iso5", struct.pack(">I", 0), b"iso5", b"iso6", b"mp41")
    next_track_id = max(track.track_id for track in tracks) + 1
    moov = box(
        b"moov",
        _mvhd(next_track_id),
        *(_trak(track) for track in tracks),
        box(b"mvex", *(_trex(track) for track in tracks)),
    )
    return ftyp + moov


def media_segment(sequence_number: int, fragments: Iterable[Fragment]) -> bytes:
    """Return one moof and its mdat for the non-empty ``fragments``.

    ``sequence_number`` goes into mfhd and must increase from one segment
    (or part) to the next.
    """
    fragments = [fragment for fragment in fragments if fragment.samples]
    if not fragments:
        raise ValueError("a media segment needs at least one sample")

    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number))
    trafs = [_traf(fragment) for fragment in fragments]
    moof = bytearray(box(b"moof", mfhd, *(traf for traf, _ in trafs)))

    # Each trun was written with data offset 0. The moof's size does not
    # depend on the offsets, so the real ones are patched in now.
    data_offset = len(moof) + 8  # mdat header
    traf_start = 8 + len(mfhd)
    for (traf, offset_position), fragment in zip(trafs, fragments, strict=True):
        struct.pack_into(">i", moof, traf_start + offset_position, data_offset)
        data_offset += sum(len(sample.data) for sample in fragment.samples)
        traf_start += len(traf)

    mdat_header = struct.pack(">I4s", data_offset - len(moof), b"mdat")
    sample_data = (sample.data for f in fragments for sample in f.samples)
    return b"".join([moof, mdat_header, *sample_data])


def _mvhd(next_track_id: int) -> bytes:
    return full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),  # times, timescale, duration
        struct.pack(">IH", 0x10000, 0x100),  # rate 1.0, volume 1.0
        bytes(10),
        _UNITY_MATRIX,
        bytes(24),
        struct.pack(">I", next_track_id),
    )


def _trak(track: Track) -> bytes:
    return box(b"trak", _tkhd(track), box(b"mdia", *_mdia_children(track)))


def _tkhd(track: Track) -> bytes:
    width = height = 0
    if isinstance(track.config, AvcConfig):
        width, height = track.config.width, track.config.height
    volume = 0 if track.is_video else 0x100
    return full_box(
        b"tkhd",
        0,
        0x000003,  # track_enabled | track_in_movie
        struct.pack(">IIII", 0, 0, track.track_id, 0),
        struct.pack(">I", 0),  # duration
        bytes(8),
        struct.pack(">hhhH", 0, 0, volume, 0),  # layer, group, volume
        _UNITY_MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )


def _mdia_children(track: Track) -> list[bytes]:
    mdhd = full_box(
        b"mdhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, track.timescale, 0),
        struct.pack(">HH", _LANGUAGE_UND, 0),
    )
    handler, name = (b"vide", b"Video") if track.is_video else (b"soun", b"Audio")
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), handler, bytes(12), name + b"\x00")
    if track.is_video:
        media_header = full_box(b"vmhd", 0, 1, bytes(8))
    else:
        media_header = full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(
        b"dinf",
        full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)),
    )
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(track)),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    return [mdhd, hdlr, box(b"minf", media_header, dinf, stbl)]


def _sample_entry(track: Track) -> bytes:
    config = track.config
    # SampleEntry: six reserved bytes and data_reference_index 1.
    header = bytes(6) + struct.pack(">H", 1)
    if isinstance(config, AvcConfig):
        return box(
            b"avc1",
            header,
            bytes(16),  # pre_defined and reserved
            struct.pack(">HH", config.width, config.height),
            struct.pack(">II", 0x00480000, 0x00480000),  # 72 dpi
            bytes(4),
            struct.pack(">H", 1),  # frame_count
            bytes(32),  # compressorname
            struct.pack(">Hh", 0x18, -1),  # depth, pre_defined
            box(b"avcC", config.record),
        )
    channels = config.channels or 2
    # The 16.16 samplerate field cannot hold rates of 65536 Hz and above;
    # decoders take the rate from the AudioSpecificConfig in esds.
    rate_field = config.sample_rate << 16 if config.sample_rate < 0x10000 else 0
    return box(
        b"mp4a",
        header,
        bytes(8),
        struct.pack(">HHHH", channels, 16, 0, 0),
        struct.pack(">I", rate_field),
        _esds(track.track_id, config),
    )


def _esds(track_id: int, config: AacConfig) -> bytes:
    # ES_Descriptor (ISO/IEC 14496-1 7.2.6.5) with objectTypeIndication 0x40
    # (MPEG-4 audio) and streamType 5 (audio).
    decoder_specific = _descriptor(0x05, config.config)
    decoder_config = _descriptor(
        0x04,
        struct.pack(">BB", 0x40, (0x05 << 2) | 1),
        bytes(3),  # bufferSizeDB
        struct.pack(">II", 0, 0),  # maxBitrate, avgBitrate: unknown
        decoder_specific,
    )
    sl_config = _descriptor(0x06, b"\x02")
    es = _descriptor(0x03, struct.pack(">HB", track_id, 0), decoder_config, sl_config)
    return full_box(b"esds", 0, 0, es)


def _descriptor(tag: int, *payloads: bytes) -> bytes:
    body = b"".join(payloads)
    size = len(body)
    # The size is written 7 bits per byte, high bit set on all but the last.
    size_bytes = [size & 0x7F]
    size >>= 7
    while size:
        size_bytes.insert(0, 0x80 | (size & 0x7F))
        size >>= 7
    return bytes([tag, *size_bytes]) + body


def _trex(track: Track) -> bytes:
    return full_box(b"trex", 0, 0, struct.pack(">IIIII", track.track_id, 1, 0, 0, 0))


def _traf(fragment: Fragment) -> tuple[bytes, int]:
    """Return a traf whose trun has data offset 0, and that field's index in it."""
    track = fragment.track
    if track.is_video:
        tfhd = full_box(
            b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", track.track_id)
        )
    else:
        tfhd = full_box(
            b"tfhd",
            0,
            _TFHD_DEFAULT_BASE_IS_MOOF | _TFHD_DEFAULT_SAMPLE_FLAGS,
            struct.pack(">II", track.track_id, SYNC_SAMPLE_FLAGS),
        )
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", fragment.base_decode_time))
    trun = _trun(fragment)
    traf = box(b"traf", tfhd, tfdt, trun)
    # The trun is the traf's last box, and its data offset follows its box
    # header, version and flags, and sample_count.
    return traf, len(traf) - len(trun) + 16


def _trun(fragment: Fragment) -> bytes:
    """Return a trun with data offset 0, packed in one struct.pack call."""
    samples = fragment.samples
    count = len(samples)
    flags = _TRUN_DATA_OFFSET | _TRUN_SAMPLE_DURATION | _TRUN_SAMPLE_SIZE
    if not fragment.track.is_video:
        entry_format = "II"
        values = [v for s in samples for v in (s.duration, len(s.data))]
        version = 0
    else:
        # Version 1 makes composition offsets signed. It is written only when
        # an offset is negative, so other fragments keep the original version 0.
        flags |= _TRUN_SAMPLE_FLAGS | _TRUN_COMPOSITION_OFFSET
        version = 1 if any(s.composition_offset < 0 for s in samples) else 0
        entry_format = "IIIi" if version else "IIII"
        values = [
            v
            for s in samples
            for v in (
                s.duration,
                len(s.data),
                SYNC_SAMPLE_FLAGS if s.keyframe else NON_SYNC_SAMPLE_FLAGS,
                s.composition_offset,
            )
        ]
    size = 20 + 4 * len(values)
    return struct.pack(
        ">I4sIIi" + entry_format * count,
        size,
        b"trun",
        (version << 24) | flags,
        count,
        0,
        *values,
    )
