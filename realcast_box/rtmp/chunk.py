"""RTMP chunk stream: reassembly of incoming messages and chunking of outgoing ones.

Implements section 5.3 of the RTMP 1.0 specification. A chunk starts with a
basic header (format 0-3 and the chunk stream id in 1, 2 or 3 bytes) and a
message header of 11, 7, 3 or 0 bytes:

- type 0: timestamp, message length, message type id, message stream id;
- type 1: timestamp delta, message length, message type id;
- type 2: timestamp delta;
- type 3: nothing, every field is taken from the chunk stream's last header.

A timestamp field of 0xFFFFFF means a 32-bit extended timestamp follows.
A type 3 chunk that starts a new message repeats the previous delta, where a
type 0 header's absolute timestamp counts as the delta. When the chunk
stream's last type 0, 1 or 2 header had an extended timestamp, each type 3
chunk carries an extended field too. FFmpeg (libavformat/rtmppkt.c) writes
it on every such chunk, and on one that starts a message it contains that
message's own delta. Some encoders omit the field on the type 3 chunks that
continue a message, so there the reader consumes the 4 bytes only when they
equal the message's extended value and otherwise reads them as payload.

NOTE: librtmp's RTMP_SendPacket (OBS uses a fork of librtmp) writes a type 3
header for a new message whose size, type and absolute timestamp equal the
previous one's, meaning a delta of 0. This reader repeats the previous delta
instead, as FFmpeg's writer requires, so such a message would get a late
timestamp. Consecutive audio or video frames have different timestamps, so
publishing media does not produce that header.

Memory per connection is bounded: messages longer than max_message_size
are rejected from their header, and the number of chunk streams, of
messages in flight and of buffered payload bytes are capped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from realcast_box.rtmp.errors import RtmpProtocolError

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0xFFFFFF
"""Largest chunk size accepted from a peer: a chunk never needs to be larger
than the largest message, whose length is a 24-bit field."""

EXTENDED_TIMESTAMP = 0xFFFFFF
_MESSAGE_HEADER_SIZES = (11, 7, 3, 0)


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACKNOWLEDGEMENT_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


@dataclass(slots=True)
class RawMessage:
    """A reassembled RTMP message; timestamp is the absolute 32-bit value in ms."""

    chunk_stream_id: int
    type_id: int
    message_stream_id: int
    timestamp: int
    payload: bytes


class _ChunkStream:
    """Header state of one chunk stream and its message being reassembled."""

    __slots__ = (
        "delta",
        "extended",
        "extended_value",
        "length",
        "message_stream_id",
        "payload",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.extended = False
        self.extended_value = 0
        self.length = 0
        self.type_id = 0
        self.message_stream_id = 0
        self.payload: bytearray | None = None


@dataclass(slots=True)
class _Header:
    fmt: int
    chunk_stream_id: int
    size: int
    timestamp_field: int = 0
    length: int = 0
    type_id: int = 0
    message_stream_id: int = 0
    extended_value: int | None = None


# Returned by ChunkReader._whole_message for a message still missing bytes.
_INCOMPLETE = object()
# Maximum number of continuation chunks in a message that
# ChunkReader._whole_message reads. It keeps a memoryview (about 190 bytes)
# per chunk until the payload is joined, so at chunk size 1 a message would
# briefly cost about 190 times its length. 4096 chunks cost under 1 MB and
# cover a 16 MB message at chunk size 4096, or a 512 KB one at the default
# chunk size of 128.
_WHOLE_MESSAGE_MAX_CONTINUATIONS = 4096


class ChunkReader:
    """Reassemble RTMP messages from chunk stream bytes.

    Call feed() with received bytes, then next_message() until it returns
    None. Apply Set Chunk Size and Abort (set_chunk_size(), abort()) before
    asking for the next message, because they change how the following chunks
    are read. Raises RtmpProtocolError on malformed or oversized input.
    """

    def __init__(
        self,
        max_message_size: int,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        max_chunk_streams: int = 64,
        max_partial_messages: int = 8,
    ) -> None:
        if not 1 <= max_message_size <= 0xFFFFFF:
            raise ValueError(
                f"max_message_size {max_message_size} is outside 1..16777215, "
                "the range of the 24-bit message length"
            )
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.max_chunk_size = max_chunk_size
        self.max_chunk_streams = max_chunk_streams
        self.max_partial_messages = max_partial_messages
        # Two maximum-size messages may be in flight at once (a keyframe and
        # its audio), so twice the message cap bounds the buffered payload.
        self.max_buffered_bytes = 2 * max_message_size
        self._buffer = bytearray()
        self._pos = 0
        self._streams: dict[int, _ChunkStream] = {}
        self._current: _ChunkStream | None = None
        self._current_id = 0
        self._chunk_left = 0
        self._buffered_bytes = 0
        self._partial_messages = 0
        # (chunk size, offset from _pos) of the first continuation header
        # that _whole_message has not checked yet in the message it waits for.
        self._scan_resume: tuple[int, int] | None = None

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def set_chunk_size(self, size: int) -> None:
        """Apply a peer's Set Chunk Size to the chunks that follow it."""
        if not 1 <= size <= self.max_chunk_size:
            raise RtmpProtocolError(
                f"invalid Set Chunk Size {size}: expected 1 to {self.max_chunk_size}"
            )
        self.chunk_size = size

    def abort(self, chunk_stream_id: int) -> None:
        """Discard the partly received message on a chunk stream (Abort message)."""
        stream = self._streams.get(chunk_stream_id)
        if stream is not None and stream.payload is not None:
            self._drop_payload(stream)

    def next_message(self) -> RawMessage | None:
        """Return the next complete message, or None when more bytes are needed."""
        while True:
            stream = self._current
            if stream is None:
                message = self._whole_message()
                if message is _INCOMPLETE:
                    return None
                if message is not None:
                    return message
                stream = self._start_chunk()
                if stream is None:
                    return None
            if not self._read_chunk_payload(stream):
                return None
            self._current = None
            if len(stream.payload) < stream.length:
                continue
            payload = bytes(stream.payload)
            self._drop_payload(stream)
            return RawMessage(
                self._current_id,
                stream.type_id,
                stream.message_stream_id,
                stream.timestamp,
                payload,
            )

    def _whole_message(self) -> RawMessage | object | None:
        """Return a message whose chunks are all in the buffer, consuming them.

        This is the usual case of a publisher's media: a message on a known
        chunk stream with a one-byte basic header, no extended timestamp,
        and at most _WHOLE_MESSAGE_MAX_CONTINUATIONS continuation chunks
        that no other chunk stream interleaves. Its payload is joined from
        the buffer in one copy (about 4 us for a 12 KB frame at chunk size
        4096 on a 2-vCPU machine).

        Returns _INCOMPLETE, consuming nothing, while such a message is
        missing bytes, which buffers at most max_message_size plus chunk
        headers. Returns None in every other case, and next_message() then
        reads chunk by chunk.
        """
        buffer = self._buffer
        pos = self._pos
        resume, self._scan_resume = self._scan_resume, None
        available = len(buffer) - pos
        if available < 1:
            return None
        first = buffer[pos]
        chunk_stream_id = first & 0x3F
        if chunk_stream_id < 2:
            return None
        stream = self._streams.get(chunk_stream_id)
        if stream is None or stream.payload is not None or stream.extended:
            return None
        fmt = first >> 6
        header_size = 1 + _MESSAGE_HEADER_SIZES[fmt]
        if available < header_size:
            return None
        delta = stream.delta
        length = stream.length
        type_id = stream.type_id
        if fmt <= 2:
            delta = int.from_bytes(buffer[pos + 1 : pos + 4], "big")
            if delta == EXTENDED_TIMESTAMP:
                return None
        if fmt <= 1:
            length = int.from_bytes(buffer[pos + 4 : pos + 7], "big")
            type_id = buffer[pos + 7]
        if not 0 < length <= self.max_message_size:
            return None
        chunk_size = self.chunk_size
        continuations = (length - 1) // chunk_size
        if continuations > _WHOLE_MESSAGE_MAX_CONTINUATIONS:
            return None
        start = pos + header_size
        end = start + length + continuations
        received = len(buffer)
        if continuations:
            # The one-byte header of each continuation chunk received so far.
            # A chunk of another chunk stream there sends the message down
            # the chunk-by-chunk path at once, so the reader never waits for
            # an interleaved message (one with an Abort after it, say).
            marker = 0xC0 | chunk_stream_id
            step = chunk_size + 1
            offset = start + chunk_size
            if resume is not None and resume[0] == chunk_size:
                # Headers before this offset passed the check on an earlier
                # call, which consumed nothing. Checking them again on every
                # trickled byte would cost time quadratic in the length.
                offset = pos + resume[1]
            while offset < end and offset < received:
                if buffer[offset] != marker:
                    return None
                offset += step
            if end > received:
                self._scan_resume = (chunk_size, offset - pos)
                return _INCOMPLETE
        if end > received:
            return _INCOMPLETE
        if continuations:
            last = start + continuations * step
            with memoryview(buffer) as view:
                pieces = [
                    view[offset : offset + chunk_size]
                    for offset in range(start, last, step)
                ]
                pieces.append(view[last:end])
                payload = b"".join(pieces)
                del pieces  # the views must go before the buffer is resized
        else:
            payload = bytes(buffer[start : start + length])

        stream.delta = delta
        if fmt == 0:
            stream.timestamp = delta
            stream.message_stream_id = int.from_bytes(
                buffer[pos + 8 : pos + 12], "little"
            )
        else:
            stream.timestamp = (stream.timestamp + delta) & 0xFFFFFFFF
        stream.length = length
        stream.type_id = type_id
        self._pos = end
        self._current_id = chunk_stream_id
        return RawMessage(
            chunk_stream_id,
            type_id,
            stream.message_stream_id,
            stream.timestamp,
            payload,
        )

    def _start_chunk(self) -> _ChunkStream | None:
        """Consume the next chunk header and return its chunk stream.

        Returns None, consuming nothing, while the header is incomplete.
        """
        buffer = self._buffer
        pos = self._pos
        if pos >= len(buffer):
            return None
        # The common case first: a one-byte type 3 header that continues the
        # message in progress on a chunk stream without extended timestamps.
        first = buffer[pos]
        if first >= 0xC2:
            stream = self._streams.get(first & 0x3F)
            if (
                stream is not None
                and stream.payload is not None
                and not stream.extended
            ):
                self._pos = pos + 1
                return self._begin_chunk(first & 0x3F, stream)
        header = self._parse_header()
        if header is None:
            return None
        self._pos += header.size
        return self._begin_chunk(header.chunk_stream_id, self._apply_header(header))

    def _begin_chunk(self, chunk_stream_id: int, stream: _ChunkStream) -> _ChunkStream:
        self._current = stream
        self._current_id = chunk_stream_id
        self._chunk_left = min(self.chunk_size, stream.length - len(stream.payload))
        return stream

    def _read_chunk_payload(self, stream: _ChunkStream) -> bool:
        """Copy available bytes of the current chunk; return True once it is whole."""
        pos = self._pos
        take = min(len(self._buffer) - pos, self._chunk_left)
        if take:
            # A memoryview slice copies once, where a bytearray slice would
            # copy into a temporary first.
            with memoryview(self._buffer) as view:
                stream.payload += view[pos : pos + take]
            self._pos = pos + take
            self._chunk_left -= take
            self._buffered_bytes += take
            if self._buffered_bytes > self.max_buffered_bytes:
                raise RtmpProtocolError(
                    f"partial messages hold more than {self.max_buffered_bytes} "
                    "bytes; the peer interleaves too many large messages"
                )
        return self._chunk_left == 0

    def _drop_payload(self, stream: _ChunkStream) -> None:
        self._buffered_bytes -= len(stream.payload)
        self._partial_messages -= 1
        stream.payload = None

    def _parse_header(self) -> _Header | None:
        """Parse one chunk header without consuming it; None if it is incomplete."""
        buffer = self._buffer
        pos = self._pos
        available = len(buffer) - pos
        if available < 1:
            return None
        fmt = buffer[pos] >> 6
        chunk_stream_id = buffer[pos] & 0x3F
        size = 1
        if chunk_stream_id == 0:
            if available < 2:
                return None
            chunk_stream_id = 64 + buffer[pos + 1]
            size = 2
        elif chunk_stream_id == 1:
            if available < 3:
                return None
            chunk_stream_id = 64 + buffer[pos + 1] + (buffer[pos + 2] << 8)
            size = 3

        header = _Header(fmt, chunk_stream_id, size)
        if available < size + _MESSAGE_HEADER_SIZES[fmt]:
            return None
        start = pos + size
        if fmt <= 2:
            header.timestamp_field = int.from_bytes(buffer[start : start + 3], "big")
        if fmt <= 1:
            header.length = int.from_bytes(buffer[start + 3 : start + 6], "big")
            header.type_id = buffer[start + 6]
        if fmt == 0:
            header.message_stream_id = int.from_bytes(
                buffer[start + 7 : start + 11], "little"
            )
        header.size += _MESSAGE_HEADER_SIZES[fmt]
        return self._parse_extended_timestamp(header, available)

    def _parse_extended_timestamp(
        self, header: _Header, available: int
    ) -> _Header | None:
        stream = self._streams.get(header.chunk_stream_id)
        if header.fmt <= 2:
            extended = header.timestamp_field == EXTENDED_TIMESTAMP
        else:
            extended = stream is not None and stream.extended
        if not extended:
            return header
        if available < header.size + 4:
            return None
        start = self._pos + header.size
        value = int.from_bytes(self._buffer[start : start + 4], "big")
        continuation = header.fmt == 3 and stream.payload is not None
        if continuation and value != stream.extended_value:
            # The sender omitted the field on this continuation chunk, so these
            # four bytes are payload.
            return header
        header.extended_value = value
        header.size += 4
        return header

    def _apply_header(self, header: _Header) -> _ChunkStream:
        stream = self._streams.get(header.chunk_stream_id)
        if stream is None:
            stream = self._new_stream(header)
        if stream.payload is not None:
            if header.fmt != 3:
                raise RtmpProtocolError(
                    f"chunk type {header.fmt} header on chunk stream "
                    f"{header.chunk_stream_id} while a message there still misses "
                    f"{stream.length - len(stream.payload)} bytes; expected type 3"
                )
            return stream
        self._start_message(stream, header)
        return stream

    def _new_stream(self, header: _Header) -> _ChunkStream:
        if header.fmt >= 2:
            raise RtmpProtocolError(
                f"chunk type {header.fmt} header on chunk stream "
                f"{header.chunk_stream_id}, which has no earlier header to extend"
            )
        if len(self._streams) >= self.max_chunk_streams:
            raise RtmpProtocolError(
                f"peer uses more than {self.max_chunk_streams} chunk streams"
            )
        stream = _ChunkStream()
        self._streams[header.chunk_stream_id] = stream
        return stream

    def _start_message(self, stream: _ChunkStream, header: _Header) -> None:
        if header.fmt <= 2:
            stream.extended = header.extended_value is not None
            if header.extended_value is not None:
                stream.extended_value = header.extended_value
                value = header.extended_value
            else:
                value = header.timestamp_field
            # After a type 0 header the absolute timestamp serves as the delta
            # of a following type 3 message, as in FFmpeg's reader.
            stream.delta = value
        elif header.extended_value is not None:
            stream.extended_value = header.extended_value
            stream.delta = header.extended_value

        if header.fmt == 0:
            stream.timestamp = stream.delta
            stream.message_stream_id = header.message_stream_id
        else:
            stream.timestamp = (stream.timestamp + stream.delta) & 0xFFFFFFFF
        if header.fmt <= 1:
            stream.length = header.length
            stream.type_id = header.type_id

        if stream.length > self.max_message_size:
            raise RtmpProtocolError(
                f"message of {stream.length} bytes (type {stream.type_id}) on chunk "
                f"stream {header.chunk_stream_id} exceeds max_message_size "
                f"{self.max_message_size}"
            )
        if self._partial_messages >= self.max_partial_messages:
            raise RtmpProtocolError(
                f"peer interleaves more than {self.max_partial_messages} "
                "partial messages"
            )
        stream.payload = bytearray()
        self._partial_messages += 1


def _basic_header(fmt: int, chunk_stream_id: int) -> bytes:
    if 2 <= chunk_stream_id <= 63:
        return bytes([fmt << 6 | chunk_stream_id])
    if 64 <= chunk_stream_id <= 319:
        return bytes([fmt << 6, chunk_stream_id - 64])
    if 320 <= chunk_stream_id <= 65599:
        rest = chunk_stream_id - 64
        return bytes([fmt << 6 | 1, rest & 0xFF, rest >> 8])
    raise ValueError(f"chunk stream id {chunk_stream_id} is outside 2..65599")


class ChunkWriter:
    """Split outgoing messages into chunks of chunk_size bytes.

    Every message starts with a type 0 header, and its continuation chunks
    use type 3 and repeat an extended timestamp, as FFmpeg expects.
    """

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE

    def write(
        self,
        chunk_stream_id: int,
        type_id: int,
        message_stream_id: int,
        timestamp: int,
        payload: bytes,
    ) -> bytes:
        if len(payload) > 0xFFFFFF:
            raise ValueError(f"message of {len(payload)} bytes exceeds 16777215")
        timestamp &= 0xFFFFFFFF
        extended = b""
        timestamp_field = timestamp
        if timestamp >= EXTENDED_TIMESTAMP:
            timestamp_field = EXTENDED_TIMESTAMP
            extended = timestamp.to_bytes(4, "big")

        out = bytearray(_basic_header(0, chunk_stream_id))
        out += timestamp_field.to_bytes(3, "big")
        out += len(payload).to_bytes(3, "big")
        out.append(type_id)
        out += message_stream_id.to_bytes(4, "little")
        out += extended
        continuation = _basic_header(3, chunk_stream_id) + extended
        for offset in range(0, len(payload), self.chunk_size):
            if offset:
                out += continuation
            out += payload[offset : offset + self.chunk_size]
        return bytes(out)
