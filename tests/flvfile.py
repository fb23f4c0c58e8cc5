"""Real FLV test input: H.264 and AAC encoded by PyAV, muxed to FLV in memory.

``encode_flv`` returns the bytes of an FLV file and ``read_tags`` splits such a
file into its tags (FLV spec v10, annex E), so tests can feed the payloads to
the packager the way RTMP delivers them.
"""

from __future__ import annotations

import fractions
import io
from dataclasses import dataclass

import av
import numpy as np

AUDIO_TAG = 8
VIDEO_TAG = 9
SCRIPT_TAG = 18


@dataclass(frozen=True)
class FlvTag:
    """One FLV tag: its type, 32-bit millisecond timestamp and payload."""

    kind: int
    timestamp: int
    payload: bytes

    @property
    def is_sequence_header(self) -> bool:
        return self.kind in (AUDIO_TAG, VIDEO_TAG) and self.payload[1] == 0

    @property
    def is_media_frame(self) -> bool:
        """Whether the tag carries one coded frame (not a header or end)."""
        return self.kind in (AUDIO_TAG, VIDEO_TAG) and self.payload[1] == 1


def read_tags(data: bytes) -> list[FlvTag]:
    """Split an FLV file into its tags."""
    if data[:3] != b"FLV":
        raise ValueError(f"not an FLV file: starts with {data[:3]!r}")
    position = int.from_bytes(data[5:9], "big") + 4  # header, PreviousTagSize0
    tags = []
    while position + 11 <= len(data):
        kind = data[position] & 0x1F
        size = int.from_bytes(data[position + 1 : position + 4], "big")
        timestamp = int.from_bytes(data[position + 4 : position + 7], "big")
        timestamp |= data[position + 7] << 24  # TimestampExtended
        start = position + 11
        tags.append(FlvTag(kind, timestamp, data[start : start + size]))
        position = start + size + 4  # PreviousTagSize
    return tags


def write_flv(tags: list[FlvTag]) -> bytes:
    """Return an FLV file (audio and video flags set) that contains ``tags``."""
    output = bytearray(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
    for tag in tags:
        size = len(tag.payload)
        header = bytes([tag.kind]) + size.to_bytes(3, "big")
        header += (tag.timestamp & 0xFFFFFF).to_bytes(3, "big")
        header += bytes([(tag.timestamp >> 24) & 0xFF]) + b"\x00\x00\x00"
        output += header + tag.payload + (size + 11).to_bytes(4, "big")
    return bytes(output)


def encode_flv(
    *,
    seconds: float = 3.0,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    gop: int = 30,
    profile: str | None = None,
    preset: str = "ultrafast",
    bframes: int = 0,
    sample_rate: int = 44100,
    video: bool = True,
    audio: bool = True,
    first_frame: int = 0,
) -> bytes:
    """Return an FLV file with ``seconds`` of generated video and stereo AAC.

    ``first_frame`` offsets the picture pattern, so that two parts of a test
    stream do not look alike.
    """
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flv") as output:
        video_stream = audio_stream = None
        if video:
            options = {"g": str(gop), "bf": str(bframes), "preset": preset}
            options["sc_threshold"] = "0"  # keyframes only every gop frames
            if profile is not None:
                options["profile"] = profile
            video_stream = output.add_stream("libx264", rate=fps, options=options)
            video_stream.width = width
            video_stream.height = height
            video_stream.pix_fmt = "yuv420p"
        if audio:
            audio_stream = output.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "stereo"

        # Frames go in in time order so that the muxer interleaves them as
        # a live encoder would.
        video_frames = round(seconds * fps) if video_stream else 0
        audio_frames = round(seconds * sample_rate / 1024) if audio_stream else 0
        events = [(index / fps, 0, index) for index in range(video_frames)]
        events += [
            (index * 1024 / sample_rate, 1, index) for index in range(audio_frames)
        ]
        for _, kind, index in sorted(events):
            if kind == 0:
                frame = _video_frame(first_frame + index, width, height)
                frame.pts = index
                frame.time_base = fractions.Fraction(1, fps)
                output.mux(video_stream.encode(frame))
            else:
                output.mux(audio_stream.encode(_audio_frame(index, sample_rate)))
        for stream in (video_stream, audio_stream):
            if stream is not None:
                output.mux(stream.encode(None))
    return buffer.getvalue()


def _video_frame(index: int, width: int, height: int) -> av.VideoFrame:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, :, 0] = (index * 7) % 256
    image[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[: height // 4, : width // 4, 2] = 255 if index % 2 else 0
    return av.VideoFrame.from_ndarray(image, format="rgb24")


def _audio_frame(index: int, sample_rate: int) -> av.AudioFrame:
    samples = 1024
    start = index * samples
    t = np.arange(start, start + samples) / sample_rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(
        np.stack([tone, tone]), format="fltp", layout="stereo"
    )
    frame.sample_rate = sample_rate
    frame.pts = start
    frame.time_base = fractions.Fraction(1, sample_rate)
    return frame
