"""RTMP chunk stream reader and writer against real chunk bytes."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from rtmp_client import (
    AUDIO,
    SET_CHUNK_SIZE,
    VIDEO,
    ClientChunkEncoder,
    decode_server_messages,
)

from realcast_box.rtmp.chunk import ChunkReader, ChunkWriter, RawMessage
from realcast_box.rtmp.errors import RtmpProtocolError

MAX_MESSAGE_SIZE = 1 << 20


def read_messages(
    data: bytes, reader: ChunkReader | None = None, step: int | None = None
) -> list[RawMessage]:
    """Feed data (in pieces of step bytes if given) and apply Set Chunk Size."""
    if reader is None:
        reader = ChunkReader(MAX_MESSAGE_SIZE)
    pieces = (
        [data]
        if step is None
        else [data[i : i + step] for i in range(0, len(data), step)]
    )
    messages = []
    for piece in pieces:
        reader.feed(piece)
        while (message := reader.next_message()) is not None:
            if message.type_id == SET_CHUNK_SIZE:
                reader.set_chunk_size(int.from_bytes(message.payload, "big"))
            messages.append(message)
    return messages


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def test_chunk_header_types_from_raw_bytes():
    data = (
        # type 0, csid 4: timestamp 1000, length 3, audio, stream 1
        b"\x04\x00\x03\xe8\x00\x00\x03\x08\x01\x00\x00\x00abc"
        # type 1: delta 40, length 2, video
        + b"\x44\x00\x00\x28\x00\x00\x02\x09de"
        # type 2: delta 20
        + b"\x84\x00\x00\x14fg"
        # type 3: repeats delta 20, length 2 and type video
        + b"\xc4hi"
    )
    assert read_messages(data) == [
        RawMessage(4, AUDIO, 1, 1000, b"abc"),
        RawMessage(4, VIDEO, 1, 1040, b"de"),
        RawMessage(4, VIDEO, 1, 1060, b"fg"),
        RawMessage(4, VIDEO, 1, 1080, b"hi"),
    ]


def test_chunk_type0_header_fields():
    encoder = ClientChunkEncoder()
    data = encoder.message(5, VIDEO, 7, 123_456, b"frame", fmt=0)
    assert read_messages(data) == [RawMessage(5, VIDEO, 7, 123_456, b"frame")]


def test_chunk_type1_header_keeps_stream_id():
    encoder = ClientChunkEncoder()
    data = encoder.message(5, AUDIO, 3, 1000, b"a", fmt=0)
    data += encoder.message(5, VIDEO, 3, 1040, b"bb", fmt=1)
    assert read_messages(data)[1] == RawMessage(5, VIDEO, 3, 1040, b"bb")


def test_chunk_type2_header_keeps_length_and_type():
    encoder = ClientChunkEncoder()
    data = encoder.message(5, AUDIO, 1, 1000, b"aa", fmt=0)
    data += encoder.message(5, AUDIO, 1, 1023, b"bb", fmt=2)
    assert read_messages(data)[1] == RawMessage(5, AUDIO, 1, 1023, b"bb")


def test_chunk_type3_new_message_repeats_delta():
    encoder = ClientChunkEncoder()
    data = encoder.message(5, AUDIO, 1, 100, b"aa", fmt=0)
    data += encoder.message(5, AUDIO, 1, 140, b"bb", fmt=2)
    data += encoder.message(5, AUDIO, 1, 180, b"cc", fmt=3)
    assert read_messages(data)[2] == RawMessage(5, AUDIO, 1, 180, b"cc")


def test_chunk_type3_after_type0_uses_timestamp_as_delta():
    encoder = ClientChunkEncoder()
    data = encoder.message(5, AUDIO, 1, 50, b"aa", fmt=0)
    data += encoder.message(5, AUDIO, 1, 100, b"bb", fmt=3)
    assert read_messages(data)[1].timestamp == 100


def test_chunk_type1_new_stream_defaults():
    data = b"\x45\x00\x00\x10\x00\x00\x01\x08z"
    assert read_messages(data) == [RawMessage(5, AUDIO, 0, 16, b"z")]


@pytest.mark.parametrize("chunk_stream_id", [2, 63, 64, 319, 320, 65599])
def test_chunk_stream_id_forms(chunk_stream_id):
    encoder = ClientChunkEncoder()
    data = encoder.message(chunk_stream_id, AUDIO, 1, 0, payload(300))
    (message,) = read_messages(data)
    assert message.chunk_stream_id == chunk_stream_id
    assert message.payload == payload(300)


def test_chunk_message_spanning_many_chunks():
    encoder = ClientChunkEncoder(chunk_size=128)
    data = encoder.message(6, VIDEO, 1, 0, payload(1000))
    assert read_messages(data) == [RawMessage(6, VIDEO, 1, 0, payload(1000))]


def test_chunk_interleaved_messages_on_two_streams():
    encoder = ClientChunkEncoder()
    change = encoder.set_chunk_size(64)
    video = list(encoder.chunks(6, VIDEO, 1, 40, payload(200, 1)))
    audio = list(encoder.chunks(4, AUDIO, 1, 20, payload(150, 2)))
    data = b"".join([change, *video[:2], *audio[:1], *video[2:], *audio[1:]])
    assert read_messages(data)[1:] == [
        RawMessage(6, VIDEO, 1, 40, payload(200, 1)),
        RawMessage(4, AUDIO, 1, 20, payload(150, 2)),
    ]


def test_chunk_size_change_between_chunks_of_one_message():
    encoder = ClientChunkEncoder(chunk_size=128)
    chunks = encoder.chunks(6, VIDEO, 1, 0, payload(600))
    first = next(chunks)
    change = encoder.set_chunk_size(4096)
    rest = b"".join(chunks)
    messages = read_messages(first + change + rest)
    assert messages[1] == RawMessage(6, VIDEO, 1, 0, payload(600))
    assert len(rest) == 1 + 600 - 128


def test_chunk_size_change_applies_to_later_messages():
    encoder = ClientChunkEncoder(chunk_size=128)
    data = encoder.set_chunk_size(1000) + encoder.message(6, VIDEO, 1, 0, payload(900))
    assert read_messages(data)[1].payload == payload(900)


@pytest.mark.parametrize("timestamp", [0xFFFFFF, 0x1000000, 0xFFFFFFFF])
def test_chunk_extended_timestamp_type0(timestamp):
    encoder = ClientChunkEncoder()
    data = encoder.message(6, VIDEO, 1, timestamp, b"x", fmt=0)
    assert data[1:4] == b"\xff\xff\xff"
    assert read_messages(data)[0].timestamp == timestamp


def test_chunk_extended_timestamp_delta_type1():
    encoder = ClientChunkEncoder()
    data = encoder.message(6, AUDIO, 1, 10, b"a", fmt=0)
    data += encoder.message(6, VIDEO, 1, 10 + 0x1234567, b"bb", fmt=1)
    assert read_messages(data)[1].timestamp == 10 + 0x1234567


@pytest.mark.parametrize("repeat_extended", [True, False], ids=["ffmpeg", "omitted"])
def test_chunk_extended_timestamp_on_continuation(repeat_extended):
    encoder = ClientChunkEncoder(chunk_size=128, repeat_extended=repeat_extended)
    body = payload(700, 3)
    data = encoder.message(6, VIDEO, 1, 0x2000000, body, fmt=0)
    expected_size = 12 + 4 + 700 + 5 * (1 + (4 if repeat_extended else 0))
    assert len(data) == expected_size
    assert read_messages(data) == [RawMessage(6, VIDEO, 1, 0x2000000, body)]


@pytest.mark.parametrize("repeat_extended", [True, False], ids=["ffmpeg", "omitted"])
def test_chunk_extended_timestamp_continuation_byte_by_byte(repeat_extended):
    encoder = ClientChunkEncoder(chunk_size=128, repeat_extended=repeat_extended)
    data = encoder.message(6, VIDEO, 1, 0x2000000, payload(700, 3), fmt=0)
    data += encoder.message(6, VIDEO, 1, 0x2000028, payload(700, 4))
    expected = read_messages(data)
    assert read_messages(data, step=1) == expected


def test_chunk_type3_new_message_reads_own_extended_delta():
    encoder = ClientChunkEncoder()
    data = encoder.message(6, AUDIO, 1, 0, b"aa", fmt=0)
    data += encoder.message(6, AUDIO, 1, 0x1000000, b"bb", fmt=2)
    data += encoder.message(6, AUDIO, 1, 0x1000000 + 0x1000005, b"cc", fmt=3)
    assert read_messages(data)[2].timestamp == 0x2000005


def test_chunk_timestamp_wraps_at_32_bits():
    encoder = ClientChunkEncoder()
    data = encoder.message(6, AUDIO, 1, 0xFFFFFFF0, b"aa", fmt=0)
    data += b"\x86\x00\x00\x20bb"
    assert read_messages(data)[1].timestamp == 0x10


def test_chunk_zero_length_message():
    data = b"\x04\x00\x00\x05\x00\x00\x00\x08\x01\x00\x00\x00"
    assert read_messages(data) == [RawMessage(4, AUDIO, 1, 5, b"")]


def test_chunk_abort_discards_partial_message():
    encoder = ClientChunkEncoder(chunk_size=128)
    first = next(encoder.chunks(6, VIDEO, 1, 0, payload(600)))
    reader = ChunkReader(MAX_MESSAGE_SIZE)
    assert read_messages(first, reader) == []
    reader.abort(6)
    encoder = ClientChunkEncoder(chunk_size=128)
    again = encoder.message(6, VIDEO, 1, 40, b"new", fmt=0)
    assert read_messages(again, reader) == [RawMessage(6, VIDEO, 1, 40, b"new")]


def test_chunk_every_split_point_gives_same_messages():
    encoder = ClientChunkEncoder(repeat_extended=False)
    data = encoder.set_chunk_size(64)
    data += encoder.message(6, VIDEO, 1, 0xFFFFF0, payload(200, 5), fmt=0)
    data += encoder.message(6, VIDEO, 1, 0x1000010, payload(200, 6), fmt=0)
    data += encoder.message(4, AUDIO, 1, 0x1000010, payload(70, 7))
    data += encoder.message(4, AUDIO, 1, 0x1000030, payload(70, 8))
    expected = read_messages(data)
    assert len(expected) == 5
    for split in range(len(data)):
        reader = ChunkReader(MAX_MESSAGE_SIZE)
        messages = read_messages(data[:split], reader)
        messages += read_messages(data[split:], reader)
        assert messages == expected, f"split at byte {split}"


def test_chunk_whole_and_split_reads_agree():
    # Whole messages in the buffer take the reader's one-copy path. Fed in
    # pieces of 1, 7 or 1000 bytes, most messages go chunk by chunk. Both
    # ways must give the same messages for every header type, interleaving
    # and chunk size.
    rng = random.Random(11)
    encoder = ClientChunkEncoder(chunk_size=128)
    data = bytearray(encoder.set_chunk_size(100))
    expected = []
    clock = {4: 0, 6: 0, 7: 0}
    for index in range(120):
        chunk_stream_id = rng.choice((4, 6, 7))
        type_id = AUDIO if chunk_stream_id == 4 else VIDEO
        clock[chunk_stream_id] += rng.choice((0, 21, 23, 33, 34))
        body = payload(rng.choice((1, 99, 100, 101, 250, 700)), index)
        chunks = list(
            encoder.chunks(chunk_stream_id, type_id, 1, clock[chunk_stream_id], body)
        )
        if index % 9 == 4 and len(chunks) > 1:
            # Another chunk stream's whole message between two chunks.
            other = 7 if chunk_stream_id != 7 else 6
            clock[other] += 33
            between = payload(50, 1000 + index)
            data += chunks[0] + encoder.message(other, VIDEO, 1, clock[other], between)
            expected.append(RawMessage(other, VIDEO, 1, clock[other], between))
            data += b"".join(chunks[1:])
        else:
            data += b"".join(chunks)
        # An interleaved message completes first, so it is listed first.
        expected.append(
            RawMessage(chunk_stream_id, type_id, 1, clock[chunk_stream_id], body)
        )
        if index == 60:
            data += encoder.set_chunk_size(4096)
    data = bytes(data)
    whole = [m for m in read_messages(data) if m.type_id != SET_CHUNK_SIZE]

    assert set(encoder.formats_used) >= {0, 1, 2, 3}
    assert whole == expected
    for step in (1, 7, 1000):
        split = [
            m for m in read_messages(data, step=step) if m.type_id != SET_CHUNK_SIZE
        ]
        assert split == expected, f"pieces of {step} bytes"


def test_chunk_interleaved_message_not_held_behind_partial_one():
    # The first chunk of a long video message, then a whole command on
    # another chunk stream: the command comes out before the rest of the
    # video arrives, so a client that waits for its reply is not stuck.
    encoder = ClientChunkEncoder(chunk_size=128)
    video = list(encoder.chunks(6, VIDEO, 1, 40, payload(300, 1)))
    command = encoder.message(3, 20, 0, 0, b"\x02\x00\x07publish")
    reader = ChunkReader(MAX_MESSAGE_SIZE)

    first = read_messages(video[0] + command, reader)
    rest = read_messages(b"".join(video[1:]), reader)

    assert first == [RawMessage(3, 20, 0, 0, b"\x02\x00\x07publish")]
    assert rest == [RawMessage(6, VIDEO, 1, 40, payload(300, 1))]


class _CountingBuffer(bytearray):
    """A reader buffer that counts index and slice reads, up to a limit."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        if self.reads > self.limit:
            raise AssertionError(f"reader indexed its buffer over {self.limit} times")
        return super().__getitem__(key)


def reader_with_known_stream(encoder: ClientChunkEncoder) -> ChunkReader:
    """Return a reader that has read one message on chunk stream 6.

    The next message there may use a short header, as a publisher's do.
    """
    reader = ChunkReader(MAX_MESSAGE_SIZE)
    reader.set_chunk_size(encoder.chunk_size)
    known = encoder.message(6, VIDEO, 1, 0, b"x")
    assert read_messages(known, reader) == [RawMessage(6, VIDEO, 1, 0, b"x")]
    return reader


def test_chunk_trickled_message_scanned_once():
    # A peer may send a long message a byte at a time. Each byte wakes the
    # reader, so checking every continuation header again on each wake-up
    # would cost time quadratic in the message size.
    encoder = ClientChunkEncoder(chunk_size=128)
    body = payload(40_000, 5)
    reader = reader_with_known_stream(encoder)
    trickled = encoder.message(6, VIDEO, 1, 40, body)
    reader._buffer = _CountingBuffer(limit=20 * len(trickled))

    messages = read_messages(trickled, reader, step=1)

    assert messages == [RawMessage(6, VIDEO, 1, 40, body)]


def test_chunk_size_one_message_memory_bounded():
    # At chunk size 1 every payload byte is its own chunk. Reading such a
    # message must not hold an object per chunk on top of its bytes.
    encoder = ClientChunkEncoder(chunk_size=1)
    body = payload(50_000, 6)
    reader = reader_with_known_stream(encoder)
    reader.feed(encoder.message(6, VIDEO, 1, 40, body))

    tracemalloc.start()
    try:
        message = reader.next_message()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert message == RawMessage(6, VIDEO, 1, 40, body)
    assert peak < 8 * len(body)


def test_chunk_oversized_message_rejected_from_header():
    reader = ChunkReader(max_message_size=1000)
    reader.feed(b"\x06\x00\x00\x00\x00\x03\xe9\x09\x01\x00\x00\x00")
    with pytest.raises(RtmpProtocolError, match=r"1001 bytes .* max_message_size 1000"):
        reader.next_message()


def test_chunk_too_many_chunk_streams_rejected():
    reader = ChunkReader(MAX_MESSAGE_SIZE, max_chunk_streams=4)
    encoder = ClientChunkEncoder()
    data = b"".join(encoder.message(csid, AUDIO, 1, 0, b"a") for csid in range(3, 8))
    with pytest.raises(RtmpProtocolError, match="more than 4 chunk streams"):
        read_messages(data, reader)


def test_chunk_too_many_partial_messages_rejected():
    reader = ChunkReader(MAX_MESSAGE_SIZE, max_partial_messages=3)
    encoder = ClientChunkEncoder(chunk_size=128)
    data = b"".join(
        next(encoder.chunks(csid, VIDEO, 1, 0, payload(300))) for csid in range(3, 7)
    )
    with pytest.raises(RtmpProtocolError, match="more than 3 partial messages"):
        read_messages(data, reader)


def test_chunk_buffered_bytes_capped():
    reader = ChunkReader(max_message_size=1000)
    reader.set_chunk_size(900)
    encoder = ClientChunkEncoder(chunk_size=900)
    data = b"".join(
        next(encoder.chunks(csid, VIDEO, 1, 0, payload(1000))) for csid in range(3, 6)
    )
    with pytest.raises(RtmpProtocolError, match="more than 2000 bytes"):
        read_messages(data, reader)


@pytest.mark.parametrize("size", [0, 0x1000000, 0x80000000])
def test_chunk_invalid_chunk_size_rejected(size):
    reader = ChunkReader(MAX_MESSAGE_SIZE)
    with pytest.raises(RtmpProtocolError, match=f"invalid Set Chunk Size {size}"):
        reader.set_chunk_size(size)


@pytest.mark.parametrize("first_byte", [0x86, 0xC6], ids=["type2", "type3"])
def test_chunk_continuing_header_on_new_stream_rejected(first_byte):
    reader = ChunkReader(MAX_MESSAGE_SIZE)
    reader.feed(bytes([first_byte]) + bytes(10))
    with pytest.raises(RtmpProtocolError, match="no earlier header"):
        reader.next_message()


def test_chunk_new_header_inside_message_rejected():
    encoder = ClientChunkEncoder(chunk_size=128)
    first = next(encoder.chunks(6, VIDEO, 1, 0, payload(600)))
    interrupting = ClientChunkEncoder().message(6, VIDEO, 1, 0, b"x", fmt=0)
    with pytest.raises(RtmpProtocolError, match="expected type 3"):
        read_messages(first + interrupting)


def test_chunk_writer_splits_at_chunk_size():
    writer = ChunkWriter()
    writer.chunk_size = 100
    data = writer.write(3, 20, 0, 0, payload(250))
    assert len(data) == 12 + 250 + 2
    assert data[12 + 100] == 0xC3
    assert data[12 + 100 + 1 + 100] == 0xC3


def test_chunk_writer_output_read_back():
    writer = ChunkWriter()
    data = writer.write(5, VIDEO, 9, 77, payload(300))
    assert decode_server_messages(data)[0].payload == payload(300)
    assert read_messages(data) == [RawMessage(5, VIDEO, 9, 77, payload(300))]


def test_chunk_writer_repeats_extended_timestamp():
    writer = ChunkWriter()
    data = writer.write(5, VIDEO, 1, 0x1000000, payload(200))
    assert data[12 + 4 + 128 : 12 + 4 + 128 + 5] == b"\xc5\x01\x00\x00\x00"
    assert read_messages(data)[0].timestamp == 0x1000000


@pytest.mark.parametrize("chunk_stream_id", [64, 400])
def test_chunk_writer_long_chunk_stream_ids(chunk_stream_id):
    data = ChunkWriter().write(chunk_stream_id, AUDIO, 1, 0, payload(300))
    assert read_messages(data)[0].chunk_stream_id == chunk_stream_id
