"""ServerProtocol fed with the bytes an OBS or FFmpeg publisher sends."""

from __future__ import annotations

import asyncio
import random
import sys
import zlib
from pathlib import Path

import pytest
from rtmp_client import (
    ABORT,
    ACKNOWLEDGEMENT,
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    DATA_AMF0,
    DATA_AMF3,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACKNOWLEDGEMENT_SIZE,
    ClientChunkEncoder,
    ServerMessageDecoder,
    client_ack,
    client_hello,
    connect_command,
    media_plan,
    publish_session,
    split_handshake_reply,
)

from realcast_box.errors import RealcastError
from realcast_box.rtmp import amf0
from realcast_box.rtmp import events as ev
from realcast_box.rtmp.errors import AmfError, RtmpProtocolError
from realcast_box.rtmp.protocol import ServerProtocol

PUBLISHER_SCRIPT = Path(__file__).with_name("publisher.py")


def connected(**options) -> tuple[ServerProtocol, ClientChunkEncoder]:
    """Return a protocol past the handshake and a client encoder for it."""
    protocol = ServerProtocol(**options)
    events = protocol.receive_data(client_hello() + client_ack())
    assert events == [ev.HandshakeComplete()]
    protocol.data_to_send()
    return protocol, ClientChunkEncoder()


def replies(protocol: ServerProtocol, decoder: ServerMessageDecoder | None = None):
    return (decoder or ServerMessageDecoder()).decode(protocol.data_to_send())


def event_summary(events: list) -> list[tuple]:
    """Reduce media events to (kind, timestamp, size, CRC-32) for readable diffs."""
    summary = []
    for event in events:
        if isinstance(event, ev.AudioData | ev.VideoData):
            kind = type(event).__name__
            checksum = zlib.crc32(event.payload)
            summary.append((kind, event.timestamp, len(event.payload), checksum))
        else:
            summary.append(event)
    return summary


def test_protocol_handshake_reply():
    protocol = ServerProtocol()
    hello = client_hello()
    assert protocol.receive_data(hello) == []
    s0, s1, s2, rest = split_handshake_reply(protocol.data_to_send())
    assert s0 == b"\x03"
    assert len(s1) == 1536
    assert s1[4:8] == bytes(4)
    assert s2 == hello[1:]
    assert rest == b""


def test_protocol_handshake_byte_by_byte():
    protocol = ServerProtocol()
    data = client_hello() + client_ack()
    events = []
    for index in range(len(data)):
        events += protocol.receive_data(data[index : index + 1])
    assert events == [ev.HandshakeComplete()]
    assert len(protocol.data_to_send()) == 1 + 2 * 1536


def test_protocol_handshake_followed_by_chunks_in_one_buffer():
    encoder = ClientChunkEncoder()
    data = client_hello() + client_ack() + encoder.command(connect_command())
    events = ServerProtocol().receive_data(data)
    assert [type(event) for event in events] == [
        ev.HandshakeComplete,
        ev.ConnectRequest,
    ]


@pytest.mark.parametrize("version", [0, 6, 0x16])
def test_protocol_handshake_bad_version(version):
    with pytest.raises(RtmpProtocolError, match=f"unsupported RTMP version {version}"):
        ServerProtocol().receive_data(bytes([version]) + bytes(100))


def test_protocol_error_is_realcast_error():
    assert issubclass(RtmpProtocolError, RealcastError)


def test_protocol_publish_session_events():
    events = ServerProtocol().receive_data(publish_session())
    assert events[:7] == [
        ev.HandshakeComplete(),
        ev.ConnectRequest(
            1.0, "live", "rtmp://127.0.0.1:1935/live", connect_command()[2]
        ),
        ev.ReleaseStream(2.0, "testkey"),
        ev.FCPublish(3.0, "testkey"),
        ev.CreateStream(4.0),
        ev.PublishRequest(5.0, 1, "testkey", "live"),
        ev.DataMessage(
            1,
            0,
            "onMetaData",
            [{"width": 160.0, "height": 120.0, "videocodecid": 7.0}],
        ),
    ]
    assert events[-2:] == [ev.FCUnpublish(6.0, "testkey"), ev.DeleteStream(1)]


def test_protocol_publish_session_media():
    events = ServerProtocol().receive_data(publish_session())
    media = [e for e in events if isinstance(e, ev.AudioData | ev.VideoData)]
    expected = [(VIDEO, 0, b"\x17\x00"), (AUDIO, 0, b"\xaf\x00")]
    expected += [(kind, time, body[:2]) for kind, time, body in media_plan()]
    observed = [
        (VIDEO if isinstance(e, ev.VideoData) else AUDIO, e.timestamp, e.payload[:2])
        for e in media
    ]
    assert observed == expected


def test_protocol_publish_session_payloads():
    events = ServerProtocol().receive_data(publish_session())
    media = [e for e in events if isinstance(e, ev.AudioData | ev.VideoData)]
    assert [e.payload for e in media[2:]] == [body for _, _, body in media_plan()]


def test_protocol_session_uses_every_header_type():
    encoder = ClientChunkEncoder()
    publish_session(encoder=encoder)
    assert sorted(encoder.formats_used) == [0, 1, 2, 3]


EXTENDED_SESSIONS = {
    "ffmpeg_extended": {"repeat_extended": True},
    "omitted_extended": {"repeat_extended": False},
}


def compact_session(repeat_extended: bool) -> bytes:
    """A short session whose late keyframe has an extended timestamp."""
    return publish_session(
        later_chunk_size=256,
        repeat_extended=repeat_extended,
        base_timestamp=0xFFFFFF - 200,
        frames=7,
        keyframe_size=600,
        frame_size=100,
    )


@pytest.mark.parametrize("repeat_extended", [True, False], ids=EXTENDED_SESSIONS)
def test_protocol_extended_timestamps_in_session(repeat_extended):
    events = ServerProtocol().receive_data(compact_session(repeat_extended))
    video = [e for e in events if isinstance(e, ev.VideoData)]
    keyframe = video[-1]
    assert [e.timestamp for e in video][-2:] == [0xFFFFFF, 0xFFFFFF + 40]
    assert keyframe.payload[0] == 0x17
    assert len(keyframe.payload) == 5 + 600


@pytest.mark.parametrize("repeat_extended", [True, False], ids=EXTENDED_SESSIONS)
def test_protocol_every_split_point_same_events(repeat_extended):
    data = compact_session(repeat_extended)
    expected = ServerProtocol().receive_data(data)
    assert len(expected) == 32
    for split in range(len(data)):
        protocol = ServerProtocol()
        events = protocol.receive_data(data[:split])
        events += protocol.receive_data(data[split:])
        assert events == expected, f"split at byte {split}"


@pytest.mark.parametrize(
    "options",
    [{}, {"repeat_extended": False, "base_timestamp": 0xFFFFFF - 300}],
    ids=["plain", "extended"],
)
def test_protocol_byte_by_byte_same_events(options):
    data = publish_session(**options)
    expected = ServerProtocol().receive_data(data)
    protocol = ServerProtocol()
    events = []
    for index in range(len(data)):
        events += protocol.receive_data(data[index : index + 1])
    assert event_summary(events) == event_summary(expected)


def test_protocol_random_splits_same_events():
    data = publish_session(chunk_size=60, later_chunk_size=1000)
    expected = ServerProtocol().receive_data(data)
    rng = random.Random(5)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), 20))
        protocol = ServerProtocol()
        events = []
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            events += protocol.receive_data(data[start:end])
        assert events == expected, f"cuts at {cuts}"


def test_protocol_set_chunk_size_between_chunks_of_message():
    protocol, encoder = connected()
    chunks = encoder.chunks(6, VIDEO, 1, 40, bytes(range(256)) * 3)
    data = next(chunks) + encoder.set_chunk_size(4096) + b"".join(chunks)
    events = protocol.receive_data(data)
    assert events == [ev.VideoData(1, 40, bytes(range(256)) * 3)]
    assert protocol.peer_chunk_size == 4096


def test_protocol_abort_discards_partial_message():
    protocol, encoder = connected()
    first = next(encoder.chunks(6, VIDEO, 1, 0, bytes(500)))
    abort = encoder.control(ABORT, (6).to_bytes(4, "big"))
    again = ClientChunkEncoder().message(6, AUDIO, 1, 80, b"\xaf\x01", fmt=0)
    assert protocol.receive_data(first + abort + again) == [
        ev.AudioData(1, 80, b"\xaf\x01")
    ]


def test_protocol_accept_connect_replies():
    protocol, encoder = connected()
    (request,) = protocol.receive_data(encoder.command(connect_command()))
    protocol.accept_connect(request.transaction_id)
    messages = replies(protocol)
    assert [(m.type_id, m.payload) for m in messages[:3]] == [
        (WINDOW_ACKNOWLEDGEMENT_SIZE, (2_500_000).to_bytes(4, "big")),
        (SET_PEER_BANDWIDTH, (2_500_000).to_bytes(4, "big") + b"\x02"),
        (SET_CHUNK_SIZE, (4096).to_bytes(4, "big")),
    ]
    assert messages[3].values() == [
        "_result",
        1.0,
        {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
        {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": 0.0,
        },
    ]


def test_protocol_accept_connect_echoes_object_encoding():
    protocol, encoder = connected()
    command = connect_command(objectEncoding=3.0)
    (request,) = protocol.receive_data(encoder.command(command))
    protocol.accept_connect(request.transaction_id)
    information = replies(protocol)[3].values()[3]
    assert information["objectEncoding"] == 3.0


def test_protocol_reject_connect():
    protocol, _ = connected()
    protocol.reject_connect(1.0, "unknown application")
    (message,) = replies(protocol)
    assert message.values() == [
        "_error",
        1.0,
        None,
        {
            "level": "error",
            "code": "NetConnection.Connect.Rejected",
            "description": "unknown application",
        },
    ]


def test_protocol_accept_create_stream_numbers_streams():
    protocol, _ = connected()
    first = protocol.accept_create_stream(4.0)
    second = protocol.accept_create_stream(5.0)
    messages = replies(protocol)
    assert (first, second) == (1, 2)
    assert messages[0].values() == ["_result", 4.0, None, 1.0]
    assert messages[1].values() == ["_result", 5.0, None, 2.0]


def test_protocol_release_and_fcpublish_answers():
    protocol, _ = connected()
    protocol.answer_release_stream(2.0)
    protocol.answer_fcpublish("key")
    protocol.answer_fcunpublish("key")
    release, fcpublish, fcunpublish = (m.values() for m in replies(protocol))
    assert release == ["_result", 2.0, None, None]
    assert fcpublish == [
        "onFCPublish",
        0.0,
        None,
        {"code": "NetStream.Publish.Start", "description": "key"},
    ]
    assert fcunpublish == [
        "onFCUnpublish",
        0.0,
        None,
        {"code": "NetStream.Unpublish.Success", "description": "key"},
    ]


def test_protocol_accept_publish_replies():
    protocol, _ = connected()
    protocol.accept_publish(1, "key")
    stream_begin, status = replies(protocol)
    assert (stream_begin.type_id, stream_begin.payload) == (
        USER_CONTROL,
        b"\x00\x00\x00\x00\x00\x01",
    )
    assert status.message_stream_id == 1
    assert status.values()[0] == "onStatus"
    assert status.values()[3]["code"] == "NetStream.Publish.Start"
    assert status.values()[3]["level"] == "status"


def test_protocol_reject_publish_reply():
    protocol, _ = connected()
    protocol.reject_publish(1, "NetStream.Publish.BadName", "stream key is in use")
    (status,) = replies(protocol)
    assert status.message_stream_id == 1
    assert status.values()[3] == {
        "level": "error",
        "code": "NetStream.Publish.BadName",
        "description": "stream key is in use",
    }


def test_protocol_send_status_after_chunk_size_change():
    protocol, _ = connected()
    decoder = ServerMessageDecoder()
    protocol.accept_connect(1.0)
    replies(protocol, decoder)
    description = "codec not supported " * 20
    protocol.send_status(1, "error", "NetStream.Publish.Rejected", description)
    (status,) = replies(protocol, decoder)
    assert status.values()[3]["description"] == description


def test_protocol_send_error_reply():
    protocol, _ = connected()
    protocol.send_error(9.0, "play is not supported")
    (message,) = replies(protocol)
    assert message.values() == [
        "_error",
        9.0,
        None,
        {
            "level": "error",
            "code": "NetConnection.Call.Failed",
            "description": "play is not supported",
        },
    ]


def test_protocol_send_ping_request():
    protocol, _ = connected()
    protocol.send_ping_request(1234)
    (message,) = replies(protocol)
    assert (message.type_id, message.payload) == (
        USER_CONTROL,
        b"\x00\x06\x00\x00\x04\xd2",
    )


def test_protocol_answers_ping_request():
    protocol, encoder = connected()
    ping = encoder.control(USER_CONTROL, b"\x00\x06\x00\x00\x30\x39")
    assert protocol.receive_data(ping) == []
    (message,) = replies(protocol)
    assert message.payload == b"\x00\x07\x00\x00\x30\x39"


def test_protocol_ping_response_event():
    protocol, encoder = connected()
    pong = encoder.control(USER_CONTROL, b"\x00\x07\x00\x00\x30\x39")
    assert protocol.receive_data(pong) == [ev.PingResponse(12345)]


def test_protocol_ignores_other_user_control_events():
    protocol, encoder = connected()
    buffer_length = encoder.control(USER_CONTROL, b"\x00\x03" + bytes(8))
    assert protocol.receive_data(buffer_length) == []


def test_protocol_acknowledges_after_window():
    protocol, encoder = connected()
    window = encoder.control(WINDOW_ACKNOWLEDGEMENT_SIZE, (5000).to_bytes(4, "big"))
    protocol.receive_data(window)
    assert protocol.data_to_send() == b""
    protocol.receive_data(encoder.message(6, VIDEO, 1, 0, bytes(6000)))
    (ack,) = replies(protocol)
    assert ack.type_id == ACKNOWLEDGEMENT
    assert int.from_bytes(ack.payload, "big") == protocol.bytes_received


def test_protocol_counts_bytes_received():
    protocol = ServerProtocol()
    data = publish_session()
    protocol.receive_data(data[:1000])
    protocol.receive_data(data[1000:])
    assert protocol.bytes_received == len(data)


def test_protocol_amf3_commands():
    protocol, encoder = connected()
    connect = [
        "connect",
        1.0,
        {"app": "live", "tcUrl": "rtmp://h/live", "objectEncoding": 3.0},
    ]
    publish = ["publish", 5.0, None, "key", "live"]
    events = protocol.receive_data(
        encoder.amf3_command(connect) + encoder.amf3_command(publish, 1)
    )
    assert events == [
        ev.ConnectRequest(1.0, "live", "rtmp://h/live", connect[2]),
        ev.PublishRequest(5.0, 1, "key", "live"),
    ]


def test_protocol_amf3_command_switching_to_amf3_values():
    protocol, encoder = connected()
    amf3_object = b"\x0a\x0b\x01\x07app\x06\x09live\x01"
    payload = b"\x00" + amf0.encode_all(["connect", 1.0]) + b"\x11" + amf3_object
    data = encoder.message(3, 17, 0, 0, payload)
    assert protocol.receive_data(data) == [
        ev.ConnectRequest(1.0, "live", None, {"app": "live"})
    ]


def test_protocol_amf3_data_message():
    protocol, encoder = connected()
    payload = b"\x00" + amf0.encode_all(
        ["@setDataFrame", "onMetaData", amf0.EcmaArray(width=640.0)]
    )
    data = encoder.message(8, DATA_AMF3, 1, 0, payload)
    assert protocol.receive_data(data) == [
        ev.DataMessage(1, 0, "onMetaData", [{"width": 640.0}])
    ]


def test_protocol_data_message_without_set_data_frame():
    protocol, encoder = connected()
    payload = amf0.encode_all(["onMetaData", {"duration": 0.0}])
    data = encoder.message(8, DATA_AMF0, 1, 0, payload)
    assert protocol.receive_data(data) == [
        ev.DataMessage(1, 0, "onMetaData", [{"duration": 0.0}])
    ]


def aggregate_member(type_id: int, timestamp: int, body: bytes) -> bytes:
    header = bytes([type_id]) + len(body).to_bytes(3, "big")
    header += (timestamp & 0xFFFFFF).to_bytes(3, "big") + bytes([timestamp >> 24])
    header += bytes(3)
    return header + body + (11 + len(body)).to_bytes(4, "big")


def test_protocol_aggregate_message_unpacked():
    protocol, encoder = connected()
    body = aggregate_member(VIDEO, 1000, b"\x27\x01v")
    body += aggregate_member(AUDIO, 1040, b"\xaf\x01a")
    body += aggregate_member(DATA_AMF0, 0x1000000, amf0.encode_all(["onCuePoint"]))
    data = encoder.message(6, AGGREGATE, 1, 5000, body)
    assert protocol.receive_data(data) == [
        ev.VideoData(1, 5000, b"\x27\x01v"),
        ev.AudioData(1, 5040, b"\xaf\x01a"),
        ev.DataMessage(1, 5000 + 0x1000000 - 1000, "onCuePoint", []),
    ]


def test_protocol_aggregate_without_last_back_pointer():
    protocol, encoder = connected()
    body = aggregate_member(AUDIO, 10, b"\xaf\x01a")[:-4]
    data = encoder.message(6, AGGREGATE, 1, 70, body)
    assert protocol.receive_data(data) == [ev.AudioData(1, 70, b"\xaf\x01a")]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"\x09\x00\x00", "truncated member header"),
        (aggregate_member(VIDEO, 0, b"abc")[:12], "runs past the end"),
        (aggregate_member(AGGREGATE, 0, b"x"), "member of type 22"),
        (aggregate_member(VIDEO, 0, b"x")[:-2], "truncated back pointer"),
    ],
    ids=["short_header", "overrun", "nested", "back_pointer"],
)
def test_protocol_aggregate_malformed(body, fragment):
    protocol, encoder = connected()
    data = encoder.message(6, AGGREGATE, 1, 0, body)
    with pytest.raises(RtmpProtocolError, match=fragment):
        protocol.receive_data(data)


@pytest.mark.parametrize("publish_type", ["live", "record", "append"])
def test_protocol_publish_types(publish_type):
    protocol, encoder = connected()
    data = encoder.command(["publish", 5.0, None, "key", publish_type], 1)
    (event,) = protocol.receive_data(data)
    assert event.publish_type == publish_type


def test_protocol_publish_without_type_is_live():
    protocol, encoder = connected()
    (event,) = protocol.receive_data(encoder.command(["publish", 5.0, None, "k"], 1))
    assert event.publish_type == "live"


def test_protocol_publish_query_split():
    protocol, encoder = connected()
    data = encoder.command(["publish", 5.0, None, "key?token=abc&x=1", "live"], 1)
    (event,) = protocol.receive_data(data)
    assert (event.name, event.query) == ("key", "token=abc&x=1")


def test_protocol_stream_commands():
    protocol, encoder = connected()
    data = encoder.command(["play", 6.0, None, "other"], 2, 8)
    data += encoder.command(["closeStream", 0.0, None], 2, 8)
    data += encoder.command(["deleteStream", 7.0, None, 2.0])
    assert protocol.receive_data(data) == [
        ev.PlayRequest(6.0, 2, "other"),
        ev.CloseStream(2),
        ev.DeleteStream(2),
    ]


def test_protocol_unknown_command():
    protocol, encoder = connected()
    data = encoder.command(["_checkbw", 8.0, None, "x"])
    assert protocol.receive_data(data) == [
        ev.UnknownCommand("_checkbw", 8.0, [None, "x"])
    ]


def test_protocol_ignores_shared_object_messages():
    protocol, encoder = connected()
    data = encoder.message(3, 19, 0, 0, b"\x00\x03abc")
    assert protocol.receive_data(data) == []


def test_protocol_records_peer_settings():
    protocol, encoder = connected()
    data = encoder.control(SET_PEER_BANDWIDTH, (1_000_000).to_bytes(4, "big") + b"\x02")
    data += encoder.control(WINDOW_ACKNOWLEDGEMENT_SIZE, (3_000).to_bytes(4, "big"))
    protocol.receive_data(data)
    assert (protocol.peer_bandwidth, protocol.peer_window_size) == (1_000_000, 3_000)


MALFORMED_COMMANDS = [
    ("no_name", [1.0, 2.0], "command name string"),
    ("no_transaction_id", ["connect"], "no numeric transaction id"),
    ("text_transaction_id", ["connect", "1"], "no numeric transaction id"),
    ("connect_without_object", ["connect", 1.0, None], "no command object"),
    ("connect_app_number", ["connect", 1.0, {"app": 3.0}], "app=3.0"),
    ("publish_without_name", ["publish", 5.0, None], "stream name None"),
    ("fcpublish_name_number", ["FCPublish", 3.0, None, 1.0], "stream name 1.0"),
    ("delete_stream_text", ["deleteStream", 7.0, None, "1"], "stream id '1'"),
    ("delete_stream_negative", ["deleteStream", 7.0, None, -1.0], "stream id -1.0"),
]


@pytest.mark.parametrize(
    ("values", "fragment"),
    [row[1:] for row in MALFORMED_COMMANDS],
    ids=[row[0] for row in MALFORMED_COMMANDS],
)
def test_protocol_malformed_command(values, fragment):
    protocol, encoder = connected()
    with pytest.raises(RtmpProtocolError, match=fragment):
        protocol.receive_data(encoder.command(values))


@pytest.mark.parametrize(
    ("type_id", "payload", "fragment"),
    [
        (COMMAND_AMF0, b"\x02\x00\x07conn", "needs 7 bytes"),
        (COMMAND_AMF0, b"\x02\x00\x07connect\x00\x3f", "needs 8 bytes"),
        (COMMAND_AMF0, b"\x1f", "invalid AMF0 type marker 0x1f"),
        (COMMAND_AMF0, b"\x02\xff\xff", "needs 65535 bytes"),
        (COMMAND_AMF0, b"", "command message of type 20 is empty"),
        (17, b"\x00", "command message of type 17 is empty"),
        (DATA_AMF0, amf0.encode_all([1.0]), "name string"),
        (DATA_AMF0, amf0.encode_all(["@setDataFrame"]), "name string"),
        (SET_CHUNK_SIZE, b"\x00\x10", "Set Chunk Size message has 2 bytes"),
        (SET_CHUNK_SIZE, b"\x00\x00\x00\x00", "invalid Set Chunk Size 0"),
        (USER_CONTROL, b"\x00", "User Control message has 1 bytes"),
        (USER_CONTROL, b"\x00\x06\x00", "ping User Control message has 3 bytes"),
    ],
    ids=[
        "truncated_string",
        "truncated_number",
        "bad_marker",
        "absurd_string_length",
        "empty_command",
        "empty_amf3_command",
        "data_without_name",
        "set_data_frame_alone",
        "short_set_chunk_size",
        "zero_chunk_size",
        "short_user_control",
        "short_ping",
    ],
)
def test_protocol_malformed_message(type_id, payload, fragment):
    protocol, encoder = connected()
    with pytest.raises(RtmpProtocolError, match=fragment):
        protocol.receive_data(encoder.message(3, type_id, 0, 0, payload))


def test_protocol_malformed_amf_raises_amf_error():
    protocol, encoder = connected()
    with pytest.raises(AmfError):
        protocol.receive_data(encoder.message(3, COMMAND_AMF0, 0, 0, b"\x03\x00"))


def test_protocol_oversized_message_rejected():
    protocol, encoder = connected(max_message_size=1000)
    header = next(encoder.chunks(6, VIDEO, 1, 0, bytes(1001)))[:12]
    with pytest.raises(RtmpProtocolError, match="exceeds max_message_size 1000"):
        protocol.receive_data(header)


def test_protocol_failure_is_sticky():
    protocol, encoder = connected()
    with pytest.raises(RtmpProtocolError):
        protocol.receive_data(encoder.message(3, COMMAND_AMF0, 0, 0, b"\x1f"))
    with pytest.raises(RtmpProtocolError, match="connection already failed"):
        protocol.receive_data(b"")


def test_protocol_random_garbage_raises_only_protocol_error():
    rng = random.Random(3)
    prefix = client_hello() + client_ack()
    for _ in range(300):
        protocol = ServerProtocol(max_message_size=4096)
        garbage = rng.randbytes(rng.randrange(1, 400))
        try:
            protocol.receive_data(prefix + garbage)
        except RtmpProtocolError:
            pass


class PublishingServer:
    """A loopback RTMP server that accepts one publisher and records its events."""

    def __init__(self) -> None:
        self.events: list = []
        self.received = bytearray()
        self.errors: list[str] = []

    async def handle(self, reader, writer) -> None:
        protocol = ServerProtocol()
        try:
            while data := await asyncio.wait_for(reader.read(65536), 30):
                self.received += data
                for event in protocol.receive_data(data):
                    self.events.append(event)
                    self.answer(protocol, event)
                writer.write(protocol.data_to_send())
                await writer.drain()
        except (RtmpProtocolError, OSError, TimeoutError) as exc:
            self.errors.append(repr(exc))
        finally:
            writer.close()

    @staticmethod
    def answer(protocol: ServerProtocol, event) -> None:
        if isinstance(event, ev.ConnectRequest):
            protocol.accept_connect(event.transaction_id)
        elif isinstance(event, ev.ReleaseStream):
            protocol.answer_release_stream(event.transaction_id)
        elif isinstance(event, ev.FCPublish):
            protocol.answer_fcpublish(event.name)
        elif isinstance(event, ev.CreateStream):
            protocol.accept_create_stream(event.transaction_id)
        elif isinstance(event, ev.PublishRequest):
            protocol.accept_publish(event.message_stream_id, event.name)
        elif isinstance(event, ev.FCUnpublish):
            protocol.answer_fcunpublish(event.name)
        elif isinstance(event, ev.UnknownCommand):
            protocol.send_error(event.transaction_id, "not supported")


async def run_pyav_publisher(server: PublishingServer) -> tuple[int, bytes]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    url = f"rtmp://127.0.0.1:{port}/live/testkey"
    # PyAV before 19 holds the GIL during network writes, so the publisher
    # runs in a child process.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PUBLISHER_SCRIPT),
        url,
        "--seconds",
        "2",
        "--width",
        "160",
        "--height",
        "120",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 90)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        listener.close()
        await listener.wait_closed()
    return process.returncode, output


@pytest.mark.interop
@pytest.mark.timeout(120)
async def test_protocol_interop_pyav_publisher():
    server = PublishingServer()
    returncode, output = await run_pyav_publisher(server)
    assert returncode == 0, output.decode(errors="replace")
    assert server.errors == []

    kinds = [type(event) for event in server.events]
    publish = next(e for e in server.events if isinstance(e, ev.PublishRequest))
    assert (publish.name, publish.publish_type) == ("testkey", "live")
    video = [e for e in server.events if isinstance(e, ev.VideoData)]
    audio = [e for e in server.events if isinstance(e, ev.AudioData)]
    assert video[0].payload[:2] == b"\x17\x00"
    assert (audio[0].payload[0] >> 4, audio[0].payload[1]) == (10, 0)
    assert len(video) > 40
    assert len(audio) > 40
    assert kinds.index(ev.PublishRequest) < kinds.index(ev.VideoData)
    video_times = [e.timestamp for e in video]
    audio_times = [e.timestamp for e in audio]
    assert video_times == sorted(video_times)
    assert audio_times == sorted(audio_times)
    assert kinds[-1] is ev.DeleteStream

    # The recorded bytes give the same events when fed one byte at a time.
    replay = ServerProtocol()
    replayed = []
    for index in range(len(server.received)):
        replayed += replay.receive_data(bytes(server.received[index : index + 1]))
    assert event_summary(replayed) == event_summary(server.events)
