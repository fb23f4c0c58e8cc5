"""PyAV work on recording files: finalize, poster frames and pulling a URL.

Every function here blocks (file I/O and FFmpeg calls), so the recorder
runs them in worker threads.

A recording is written as fragmented MP4 (an init segment, then moof and
mdat pairs), so a crash loses at most the fragment being written.
``finalize`` cuts a torn last fragment off and remuxes the rest, without
re-encoding, into a regular MP4 whose moov comes first (fast start).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import av
from av.bitstream import BitStreamFilterContext

logger = logging.getLogger(__name__)

# Position of the poster frame, as a fraction of the duration.
THUMBNAIL_POSITION = 0.1
THUMBNAIL_MAX_WIDTH = 640
# Demuxed packets examined to find each track's first timestamp.
FIRST_PACKETS_EXAMINED = 2000
# Options of FFmpeg's mp4 muxer for a pulled recording: a fragment at each
# keyframe and at most every 2 s (frag_duration is in microseconds).
# delay_moov writes the init segment with the first fragment, once
# aac_adtstoasc has given ADTS audio (HLS in MPEG-TS) its decoder config.
FRAGMENTED_MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof",
    "frag_duration": "2000000",
}
# Seconds that FFmpeg waits on a pulled URL before it gives up (open, read).
PULL_TIMEOUT = (10.0, 10.0)


class RecordingFileError(Exception):
    """A recording file contains no playable media; the message gives the reason."""


@dataclass(frozen=True)
class FinalizedFile:
    duration: float  # seconds
    file_size: int  # bytes


def complete_length(path: Path) -> int:
    """Return the length of the file's leading run of complete MP4 boxes.

    A moof counts only together with the mdat after it, so a fragment torn by
    a crash is not counted. Returns 0 when the file does not start with a box.
    """
    size = path.stat().st_size
    complete = 0
    position = 0
    pending_moof = False
    with path.open("rb") as file:
        while position + 8 <= size:
            file.seek(position)
            header = file.read(16)
            box_size, box_type = struct.unpack(">I4s", header[:8])
            if box_size == 1 and len(header) >= 16:
                box_size = struct.unpack(">Q", header[8:16])[0]
            elif box_size == 0:
                box_size = size - position
            if box_size < 8 or position + box_size > size:
                break
            position += box_size
            if box_type == b"moof":
                pending_moof = True
                continue
            if box_type == b"mdat" or not pending_moof:
                complete = position
            pending_moof = False
    return complete


def _first_timestamps(path: Path) -> float:
    """Return the earliest DTS of any track, in seconds."""
    earliest: float | None = None
    seen: set[int] = set()
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        if not streams:
            raise RecordingFileError("the file has no audio or video track")
        for count, packet in enumerate(container.demux(*streams)):
            if packet.dts is not None and packet.stream.index not in seen:
                seen.add(packet.stream.index)
                seconds = float(packet.dts * packet.time_base)
                earliest = seconds if earliest is None else min(earliest, seconds)
            if len(seen) == len(streams) or count >= FIRST_PACKETS_EXAMINED:
                break
    if earliest is None:
        raise RecordingFileError("the file contains no media samples")
    return earliest


def finalize(source: Path, target: Path) -> FinalizedFile:
    """Remux the fragmented ``source`` into a fast-start MP4 at ``target``.

    Timestamps are shifted so that the recording starts at 0. ``target`` is
    written under a temporary name and renamed, so it is either complete or
    absent. Raises RecordingFileError when nothing in ``source`` is playable.
    """
    if not source.exists():
        raise RecordingFileError(f"the file {source.name} is missing")
    length = complete_length(source)
    if length == 0:
        raise RecordingFileError("the file contains no complete MP4 box")
    if length < source.stat().st_size:
        logger.warning(
            "%s: cutting %d bytes of a torn last fragment",
            source.name,
            source.stat().st_size - length,
        )
        os.truncate(source, length)
    try:
        start = _first_timestamps(source)
        duration = _remux(source, target, start)
    except av.FFmpegError as exc:
        raise RecordingFileError(f"FFmpeg cannot read the file: {exc}") from None
    return FinalizedFile(duration, target.stat().st_size)


def probe(path: Path) -> FinalizedFile:
    """Return the duration and size of a finalized recording."""
    try:
        with av.open(str(path)) as container:
            duration = (container.duration or 0) / av.time_base
    except av.FFmpegError as exc:
        raise RecordingFileError(f"FFmpeg cannot read the file: {exc}") from None
    return FinalizedFile(round(duration, 3), path.stat().st_size)


def _remux(source: Path, target: Path, start: float) -> float:
    temporary = target.with_name(f".{target.name}.tmp")
    end = 0.0
    packets = 0
    with av.open(str(source)) as inputs:
        streams = [s for s in inputs.streams if s.type in ("video", "audio")]
        with av.open(
            str(temporary), "w", format="mp4", options={"movflags": "+faststart"}
        ) as output:
            outputs = {s.index: output.add_stream_from_template(s) for s in streams}
            for packet in inputs.demux(*streams):
                if packet.dts is None:
                    continue  # the demuxer's flush packet
                time_base = packet.time_base
                offset = round(start / time_base)
                packet.dts -= offset
                if packet.pts is not None:
                    packet.pts -= offset
                    packet_end = packet.pts + (packet.duration or 0)
                    end = max(end, float(packet_end * time_base))
                packet.stream = outputs[packet.stream.index]
                output.mux(packet)
                packets += 1
    if packets == 0:
        temporary.unlink(missing_ok=True)
        raise RecordingFileError("the file contains no media samples")
    os.replace(temporary, target)
    return round(end, 3)


def make_thumbnail(source: Path, target: Path) -> bool:
    """Write a JPEG of the keyframe about 10% into ``source``.

    Returns False when the file has no video. Raises av.FFmpegError when
    FFmpeg fails.
    """
    with av.open(str(source)) as container:
        if not container.streams.video:
            return False
        stream = container.streams.video[0]
        duration = container.duration or 0  # microseconds
        position = int(duration * THUMBNAIL_POSITION)
        if position > 0:
            # A seek without any_frame lands on the keyframe at or before it.
            container.seek(position, backward=True)
        frame = next(container.decode(stream), None)
        if frame is None:
            return False
        width = min(frame.width, THUMBNAIL_MAX_WIDTH) // 2 * 2
        height = max(2, round(frame.height * width / frame.width) // 2 * 2)
        image = frame.reformat(width=width, height=height, format="yuvj420p")
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = width, height
        encoder.pix_fmt = "yuvj420p"
        encoder.time_base = stream.time_base or av.time_base
        image.pts = None
        data = b"".join(bytes(p) for p in (*encoder.encode(image), *encoder.encode()))
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, target)
    return True


class Puller:
    """Copies the media of a URL into a fragmented MP4, in a worker thread.

    ``run`` returns when the source ends or ``stop`` is called, and raises
    av.FFmpegError (or OSError) when the source cannot be read.
    """

    def __init__(self, url: str, target: Path) -> None:
        self.url = url
        self.target = target
        self._stop = threading.Event()
        self.written = 0  # packets copied so far

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Copy packets until the end or ``stop``; return the packets written."""
        with av.open(self.url, timeout=PULL_TIMEOUT) as source:
            streams = [s for s in source.streams if s.type in ("video", "audio")]
            if not streams:
                raise RecordingFileError(f"{self.url} has no audio or video")
            with av.open(
                str(self.target), "w", format="mp4", options=FRAGMENTED_MP4_OPTIONS
            ) as output:
                outputs = {s.index: output.add_stream_from_template(s) for s in streams}
                filters = {s.index: _adts_filter(s) for s in streams}
                for packet in source.demux(*streams):
                    if self._stop.is_set():
                        break
                    if packet.dts is None:
                        continue
                    index = packet.stream.index
                    self._mux(output, outputs[index], filters[index], packet)
                for index, bsf in filters.items():
                    if bsf is not None:
                        self._mux(output, outputs[index], bsf, None)
        return self.written

    def _mux(
        self,
        output: av.container.OutputContainer,
        stream: av.stream.Stream,
        bsf: BitStreamFilterContext | None,
        packet: av.Packet | None,
    ) -> None:
        """Mux ``packet`` (None flushes ``bsf``) through the bitstream filter."""
        if bsf is None:
            packets = [packet] if packet is not None else []
        else:
            packets = bsf.filter(packet)
        for item in packets:
            item.stream = stream
            output.mux(item)
            self.written += 1


def _adts_filter(stream: av.stream.Stream) -> BitStreamFilterContext | None:
    """Return the ADTS-to-MP4 filter for AAC without a decoder config, else None.

    AAC in MPEG-TS carries an ADTS header on each frame, which MP4 does not
    allow; aac_adtstoasc strips it and derives the AudioSpecificConfig.
    """
    context = stream.codec_context
    if stream.type != "audio" or context.name != "aac" or context.extradata:
        return None
    return BitStreamFilterContext("aac_adtstoasc", stream)
