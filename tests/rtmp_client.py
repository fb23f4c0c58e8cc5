"""Client side of RTMP for tests: what an OBS or FFmpeg publisher sends.

The chunk encoder here is written independently of realcast_box.rtmp.chunk,
so the server's reader is checked against a second implementation. It picks
header types the way FFmpeg's writer does (type 0 for a new stream or a
timestamp going back, then 1, 2 or 3 as fields repeat), or takes the type
from the caller. A simple decoder reads the server's replies.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from realcast_box.rtmp import amf0

HANDSHAKE_SIZE = 1536
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACKNOWLEDGEMENT_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
COMMAND_AMF3 = 17
DATA_AMF0 = 18
COMMAND_AMF0 = 20
AGGREGATE = 22

# Chunk streams as FFmpeg's RTMP client uses them.
CONTROL_CHUNK_STREAM = 2
COMMAND_CHUNK_STREAM = 3
MEDIA_CHUNK_STREAM = 4
VIDEO_CHUNK_STREAM = 6
SOURCE_CHUNK_STREAM = 8


def client_hello(seed: int = 1) -> bytes:
    """Return C0 and C1: version 3, time 0, zero field and seeded random bytes."""
    rng = random.Random(seed)
    return b"\x03" + bytes(8) + rng.randbytes(HANDSHAKE_SIZE - 8)


def client_ack(seed: int = 2) -> bytes:
    """Return a C2; the server does not check its content."""
    return random.Random(seed).randbytes(HANDSHAKE_SIZE)


@dataclass
class _SentHeader:
    timestamp: int
    value: int  # the timestamp or delta that the last header carried or implied
    extended: bool  # whether the last type 0, 1 or 2 header had 0xFFFFFF
    length: int
    type_id: int
    message_stream_id: int


def basic_header(fmt: int, chunk_stream_id: int) -> bytes:
    if chunk_stream_id < 64:
        return bytes([fmt << 6 | chunk_stream_id])
    if chunk_stream_id < 320:
        return bytes([fmt << 6, chunk_stream_id - 64])
    rest = chunk_stream_id - 64
    return bytes([fmt << 6 | 1, rest & 0xFF, rest >> 8])


class ClientChunkEncoder:
    """Chunk writer of a publishing client.

    repeat_extended controls whether type 3 continuation chunks repeat an
    extended timestamp (FFmpeg does) or omit it (some encoders do).
    """

    def __init__(self, chunk_size: int = 128, repeat_extended: bool = True) -> None:
        self.chunk_size = chunk_size
        self.repeat_extended = repeat_extended
        self._previous: dict[int, _SentHeader] = {}
        self.formats_used: Counter[int] = Counter()

    def message(
        self,
        chunk_stream_id: int,
        type_id: int,
        message_stream_id: int,
        timestamp: int,
        payload: bytes,
        fmt: int | None = None,
    ) -> bytes:
        """Return all chunks of one message."""
        return b"".join(
            self.chunks(
                chunk_stream_id, type_id, message_stream_id, timestamp, payload, fmt
            )
        )

    def chunks(
        self,
        chunk_stream_id: int,
        type_id: int,
        message_stream_id: int,
        timestamp: int,
        payload: bytes,
        fmt: int | None = None,
    ) -> Iterator[bytes]:
        """Yield the chunks of one message, reading chunk_size before each one.

        A caller may change chunk_size between chunks, after sending a Set
        Chunk Size message, as the specification allows.
        """
        previous = self._previous.get(chunk_stream_id)
        if fmt is None:
            fmt = _choose_format(
                previous, type_id, message_stream_id, timestamp, len(payload)
            )
        value = timestamp if fmt == 0 else timestamp - previous.timestamp
        value &= 0xFFFFFFFF
        if fmt <= 2:
            extended = value >= 0xFFFFFF
        else:
            extended = previous.extended
            if not extended and value != previous.value:
                raise ValueError(
                    f"a type 3 header implies delta {previous.value}, not {value}"
                )
        extended_field = value.to_bytes(4, "big") if extended else b""

        self.formats_used[fmt] += 1
        header = bytearray(basic_header(fmt, chunk_stream_id))
        if fmt <= 2:
            header += min(value, 0xFFFFFF).to_bytes(3, "big")
        if fmt <= 1:
            header += len(payload).to_bytes(3, "big") + bytes([type_id])
        if fmt == 0:
            header += message_stream_id.to_bytes(4, "little")
        header += extended_field
        if fmt != 0:
            message_stream_id = previous.message_stream_id
        self._previous[chunk_stream_id] = _SentHeader(
            timestamp, value, extended, len(payload), type_id, message_stream_id
        )

        offset = 0
        first = True
        while first or offset < len(payload):
            piece = payload[offset : offset + self.chunk_size]
            offset += len(piece)
            if first:
                yield bytes(header) + piece
                first = False
            else:
                repeat = extended_field if self.repeat_extended else b""
                yield basic_header(3, chunk_stream_id) + repeat + piece

    def set_chunk_size(self, size: int) -> bytes:
        """Return a Set Chunk Size message and use the size from now on."""
        data = self.message(
            CONTROL_CHUNK_STREAM, SET_CHUNK_SIZE, 0, 0, size.to_bytes(4, "big")
        )
        self.chunk_size = size
        return data

    def control(self, type_id: int, payload: bytes) -> bytes:
        return self.message(CONTROL_CHUNK_STREAM, type_id, 0, 0, payload)

    def command(
        self, values: list, message_stream_id: int = 0, chunk_stream_id: int = 3
    ) -> bytes:
        return self.message(
            chunk_stream_id,
            COMMAND_AMF0,
            message_stream_id,
            0,
            amf0.encode_all(values),
        )

    def amf3_command(self, values: list, message_stream_id: int = 0) -> bytes:
        payload = b"\x00" + amf0.encode_all(values)
        return self.message(
            COMMAND_CHUNK_STREAM, COMMAND_AMF3, message_stream_id, 0, payload
        )


def _choose_format(
    previous: _SentHeader | None,
    type_id: int,
    message_stream_id: int,
    timestamp: int,
    length: int,
) -> int:
    if (
        previous is None
        or previous.message_stream_id != message_stream_id
        or timestamp < previous.timestamp
    ):
        return 0
    if previous.type_id != type_id or previous.length != length:
        return 1
    # FFmpeg compares the 24-bit fields, so two extended deltas also give type 3.
    delta = timestamp - previous.timestamp
    if min(delta, 0xFFFFFF) == min(previous.value, 0xFFFFFF):
        return 3
    return 2


def connect_command(app: str = "live", **extra: object) -> list:
    properties = {
        "app": app,
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
        "tcUrl": f"rtmp://127.0.0.1:1935/{app}",
    }
    properties.update(extra)
    return ["connect", 1, properties]


def avc_sequence_header() -> bytes:
    return bytes([0x17, 0x00, 0, 0, 0]) + bytes.fromhex("0142c00dffe1000967")


def avc_frame(keyframe: bool, size: int, seed: int) -> bytes:
    first = 0x17 if keyframe else 0x27
    body = random.Random(seed).randbytes(size)
    return bytes([first, 0x01, 0, 0, 0]) + body


def aac_sequence_header() -> bytes:
    return bytes([0xAF, 0x00, 0x12, 0x10])


def aac_frame(size: int, seed: int) -> bytes:
    return bytes([0xAF, 0x01]) + random.Random(seed).randbytes(size)


def publish_session(
    chunk_size: int = 128,
    later_chunk_size: int = 4096,
    key: str = "testkey",
    repeat_extended: bool = True,
    base_timestamp: int = 0,
    frames: int = 12,
    keyframe_size: int = 5000,
    frame_size: int = 300,
    encoder: ClientChunkEncoder | None = None,
) -> bytes:
    """Return every byte a publisher sends, from C0 to deleteStream.

    Audio goes on chunk stream 4 and video on 6. Keyframes get a type 0
    header with the absolute timestamp, as librtmp sends some messages, and
    the other messages get the header type that FFmpeg would pick. Media
    timestamps start at base_timestamp; a value just below 0xFFFFFF makes the
    later keyframes carry extended timestamps.
    """
    if encoder is None:
        encoder = ClientChunkEncoder(repeat_extended=repeat_extended)
    out = bytearray(client_hello() + client_ack())
    if chunk_size != encoder.chunk_size:
        out += encoder.set_chunk_size(chunk_size)
    out += encoder.command(connect_command())
    out += encoder.control(WINDOW_ACKNOWLEDGEMENT_SIZE, (2_500_000).to_bytes(4, "big"))
    out += encoder.command(["releaseStream", 2, None, key])
    out += encoder.command(["FCPublish", 3, None, key])
    out += encoder.command(["createStream", 4, None])
    out += encoder.set_chunk_size(later_chunk_size)
    out += encoder.command(["publish", 5, None, key, "live"], 1, SOURCE_CHUNK_STREAM)
    metadata = amf0.EcmaArray(width=160.0, height=120.0, videocodecid=7.0)
    out += encoder.message(
        SOURCE_CHUNK_STREAM,
        DATA_AMF0,
        1,
        0,
        amf0.encode_all(["@setDataFrame", "onMetaData", metadata]),
    )
    out += encoder.message(MEDIA_CHUNK_STREAM, VIDEO, 1, 0, avc_sequence_header())
    out += encoder.message(MEDIA_CHUNK_STREAM, AUDIO, 1, 0, aac_sequence_header())
    plan = media_plan(base_timestamp, frames, keyframe_size, frame_size)
    for type_id, timestamp, payload in plan:
        channel = MEDIA_CHUNK_STREAM if type_id == AUDIO else VIDEO_CHUNK_STREAM
        fmt = 0 if payload[0] == 0x17 else None
        out += encoder.message(channel, type_id, 1, timestamp, payload, fmt)
    out += encoder.command(["FCUnpublish", 6, None, key])
    out += encoder.command(["deleteStream", 7, None, 1])
    return bytes(out)


def media_plan(
    base_timestamp: int = 0,
    frames: int = 12,
    keyframe_size: int = 5000,
    frame_size: int = 300,
) -> list[tuple[int, int, bytes]]:
    """Return (type id, timestamp, payload) of interleaved audio and video.

    Sizes repeat so the encoder uses type 2 and type 3 headers, and some
    frames are larger than the chunk size.
    """
    plan = []
    for index in range(frames):
        video_time = base_timestamp + index * 40
        size = keyframe_size if index % 6 == 0 else frame_size
        plan.append((VIDEO, video_time, avc_frame(index % 6 == 0, size, index)))
        for part in range(2):
            audio_time = video_time + part * 20
            plan.append((AUDIO, audio_time, aac_frame(40, index * 2 + part)))
    return plan


@dataclass(frozen=True)
class ServerMessage:
    chunk_stream_id: int
    type_id: int
    message_stream_id: int
    timestamp: int
    payload: bytes

    def values(self) -> list:
        return amf0.decode_all(self.payload)


def split_handshake_reply(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Split S0, S1, S2 and what follows them."""
    s0 = data[:1]
    s1 = data[1 : 1 + HANDSHAKE_SIZE]
    s2 = data[1 + HANDSHAKE_SIZE : 1 + 2 * HANDSHAKE_SIZE]
    return s0, s1, s2, data[1 + 2 * HANDSHAKE_SIZE :]


class ServerMessageDecoder:
    """Decode server chunks, which use only type 0 and type 3 headers.

    The decoder keeps the chunk size that the server set, so successive
    outputs of one connection must go through one decoder.
    """

    def __init__(self) -> None:
        self.chunk_size = 128

    def decode(self, data: bytes) -> list[ServerMessage]:
        messages = []
        pos = 0
        while pos < len(data):
            message, pos = self._decode_message(data, pos)
            if message.type_id == SET_CHUNK_SIZE:
                self.chunk_size = int.from_bytes(message.payload, "big")
            messages.append(message)
        return messages

    def _decode_message(self, data: bytes, pos: int) -> tuple[ServerMessage, int]:
        fmt = data[pos] >> 6
        assert fmt == 0, f"expected a type 0 header at {pos}, got type {fmt}"
        chunk_stream_id = data[pos] & 0x3F
        timestamp = int.from_bytes(data[pos + 1 : pos + 4], "big")
        length = int.from_bytes(data[pos + 4 : pos + 7], "big")
        type_id = data[pos + 7]
        stream_id = int.from_bytes(data[pos + 8 : pos + 12], "little")
        pos += 12
        extended = b""
        if timestamp == 0xFFFFFF:
            extended = data[pos : pos + 4]
            timestamp = int.from_bytes(extended, "big")
            pos += 4
        payload = bytearray()
        while True:
            take = min(self.chunk_size, length - len(payload))
            payload += data[pos : pos + take]
            pos += take
            if len(payload) == length:
                break
            assert data[pos] == 0xC0 | chunk_stream_id
            pos += 1 + len(extended)
        message = ServerMessage(
            chunk_stream_id, type_id, stream_id, timestamp, bytes(payload)
        )
        return message, pos


def decode_server_messages(data: bytes) -> list[ServerMessage]:
    """Decode the chunks of one server output that starts at chunk size 128."""
    return ServerMessageDecoder().decode(data)
