"""Sans-IO RTMP server protocol: bytes in, events out, reply bytes queued.

ServerProtocol performs the handshake, reassembles chunks, replies to protocol
control messages (Acknowledgement, Ping) by itself and turns commands, data
and media messages into the events of events.py. The caller decides how to
answer each command through the reply methods and sends data_to_send().

Malformed or oversized input raises RtmpProtocolError; the connection is
then unusable and every later receive_data() call raises again.
"""

from __future__ import annotations

import logging

from realcast_box.rtmp import amf0
from realcast_box.rtmp import events as ev
from realcast_box.rtmp.chunk import (
    MAX_CHUNK_SIZE,
    ChunkReader,
    ChunkWriter,
    MessageType,
    RawMessage,
)
from realcast_box.rtmp.errors import RtmpProtocolError
from realcast_box.rtmp.handshake import ServerHandshake

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
WINDOW_ACKNOWLEDGEMENT_SIZE = 2_500_000
PEER_BANDWIDTH = 2_500_000
OUTGOING_CHUNK_SIZE = 4096
FMS_VERSION = "FMS/3,0,1,123"
CAPABILITIES = 31

_PEER_BANDWIDTH_DYNAMIC = 2
_USER_CONTROL_STREAM_BEGIN = 0
_USER_CONTROL_PING_REQUEST = 6
_USER_CONTROL_PING_RESPONSE = 7

# Chunk streams for outgoing messages, as Flash Media Server assigns them.
_CONTROL_CHUNK_STREAM = 2
_COMMAND_CHUNK_STREAM = 3
_STREAM_CHUNK_STREAM = 5

# Module-level ints spare an enum attribute lookup per message.
_AUDIO = int(MessageType.AUDIO)
_VIDEO = int(MessageType.VIDEO)

_AGGREGATE_HEADER_SIZE = 11
_AGGREGATE_MEMBER_TYPES = {
    MessageType.AUDIO,
    MessageType.VIDEO,
    MessageType.DATA_AMF0,
    MessageType.DATA_AMF3,
}


class ServerProtocol:
    """One RTMP connection seen from the server, without any I/O.

    max_message_size caps the length of one message (the header is rejected
    before any payload is buffered). max_chunk_size caps the peer's Set Chunk
    Size, max_chunk_streams the chunk stream ids the peer may use and
    max_partial_messages the messages reassembled at the same time.

    bytes_received counts every byte given to receive_data(), the handshake
    included. peer_window_size and peer_bandwidth are the values of the
    peer's last Window Acknowledgement Size and Set Peer Bandwidth (0 until
    it sends one), and peer_chunk_size is the chunk size it set.
    """

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        *,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        max_chunk_streams: int = 64,
        max_partial_messages: int = 8,
    ) -> None:
        self.bytes_received = 0
        self.peer_window_size = 0
        self.peer_bandwidth = 0
        self._handshake = ServerHandshake()
        self._reader = ChunkReader(
            max_message_size,
            max_chunk_size=max_chunk_size,
            max_chunk_streams=max_chunk_streams,
            max_partial_messages=max_partial_messages,
        )
        self._writer = ChunkWriter()
        self._outgoing = bytearray()
        self._acknowledged = 0
        self._object_encoding = 0.0
        self._next_stream_id = 1
        self._failure: str | None = None

    @property
    def peer_chunk_size(self) -> int:
        return self._reader.chunk_size

    def receive_data(self, data: bytes) -> list[ev.Event]:
        """Consume received bytes and return the events they complete.

        Raises RtmpProtocolError on malformed or oversized input.
        """
        if self._failure is not None:
            raise RtmpProtocolError(f"connection already failed: {self._failure}")
        self.bytes_received += len(data)
        events: list[ev.Event] = []
        try:
            if not self._handshake.done:
                data = self._handshake.feed(data)
                self._outgoing += self._handshake.data_to_send()
                if not self._handshake.done:
                    return events
                events.append(ev.HandshakeComplete())
            self._reader.feed(data)
            while (message := self._reader.next_message()) is not None:
                self._handle_message(message, events)
        except RtmpProtocolError as exc:
            self._failure = str(exc)
            raise
        self._acknowledge_if_due()
        return events

    def data_to_send(self) -> bytes:
        """Return every byte queued since the last call and clear the queue."""
        if not self._outgoing:
            return b""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    # Incoming messages

    def _handle_message(self, message: RawMessage, events: list) -> None:
        type_id = message.type_id
        # Audio and video are nearly every message, so they are tested first.
        if type_id == _AUDIO:
            events.append(
                ev.AudioData(
                    message.message_stream_id, message.timestamp, message.payload
                )
            )
        elif type_id == _VIDEO:
            events.append(
                ev.VideoData(
                    message.message_stream_id, message.timestamp, message.payload
                )
            )
        elif type_id == MessageType.SET_CHUNK_SIZE:
            self._reader.set_chunk_size(_read_u32(message, "Set Chunk Size"))
        elif type_id == MessageType.ABORT:
            self._reader.abort(_read_u32(message, "Abort"))
        elif type_id == MessageType.ACKNOWLEDGEMENT:
            _read_u32(message, "Acknowledgement")
        elif type_id == MessageType.WINDOW_ACKNOWLEDGEMENT_SIZE:
            self.peer_window_size = _read_u32(message, "Window Acknowledgement Size")
        elif type_id == MessageType.SET_PEER_BANDWIDTH:
            self.peer_bandwidth = _read_u32(message, "Set Peer Bandwidth")
        elif type_id == MessageType.USER_CONTROL:
            self._handle_user_control(message, events)
        elif type_id in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            events.append(self._parse_command(message))
        elif type_id == MessageType.AGGREGATE:
            self._handle_aggregate(message, events)
        elif type_id in _AGGREGATE_MEMBER_TYPES:
            events.append(_parse_media_or_data(message))
        else:
            logger.debug("ignoring RTMP message of type %d", type_id)

    def _handle_user_control(self, message: RawMessage, events: list) -> None:
        payload = message.payload
        if len(payload) < 2:
            raise RtmpProtocolError(
                f"User Control message has {len(payload)} bytes, expected at least 2"
            )
        event_type = int.from_bytes(payload[:2], "big")
        if event_type not in (_USER_CONTROL_PING_REQUEST, _USER_CONTROL_PING_RESPONSE):
            return
        if len(payload) < 6:
            raise RtmpProtocolError(
                f"ping User Control message has {len(payload)} bytes, expected 6"
            )
        timestamp = int.from_bytes(payload[2:6], "big")
        if event_type == _USER_CONTROL_PING_REQUEST:
            self._send_user_control(_USER_CONTROL_PING_RESPONSE, timestamp)
        else:
            events.append(ev.PingResponse(timestamp))

    def _handle_aggregate(self, message: RawMessage, events: list) -> None:
        """Unpack an aggregate message (type 22) into its audio, video and data.

        Each member is an FLV-tag-like header (type, size, timestamp, stream
        id), the body and a 4-byte back pointer. Member timestamps are rebased
        so the first member gets the aggregate's own timestamp; the members
        take the aggregate's message stream id.
        """
        payload = message.payload
        pos = 0
        first_timestamp: int | None = None
        while pos < len(payload):
            if len(payload) - pos < _AGGREGATE_HEADER_SIZE:
                raise RtmpProtocolError(
                    f"aggregate message has a truncated member header at offset {pos}"
                )
            type_id = payload[pos]
            size = int.from_bytes(payload[pos + 1 : pos + 4], "big")
            timestamp = int.from_bytes(payload[pos + 4 : pos + 7], "big")
            timestamp |= payload[pos + 7] << 24
            body_start = pos + _AGGREGATE_HEADER_SIZE
            body_end = body_start + size
            if body_end > len(payload):
                raise RtmpProtocolError(
                    f"aggregate member of {size} bytes at offset {pos} runs past "
                    f"the end of the {len(payload)}-byte message"
                )
            if type_id not in _AGGREGATE_MEMBER_TYPES:
                raise RtmpProtocolError(
                    f"aggregate message contains a member of type {type_id}; "
                    "expected audio, video or data"
                )
            if first_timestamp is None:
                first_timestamp = timestamp
            member = RawMessage(
                message.chunk_stream_id,
                type_id,
                message.message_stream_id,
                (message.timestamp + timestamp - first_timestamp) & 0xFFFFFFFF,
                payload[body_start:body_end],
            )
            events.append(_parse_media_or_data(member))
            # The back pointer repeats the member's size and is not needed. It
            # is tolerated missing after the last member only.
            pos = body_end + 4
            if pos > len(payload) and body_end != len(payload):
                raise RtmpProtocolError(
                    f"aggregate message has a truncated back pointer at {body_end}"
                )

    def _parse_command(self, message: RawMessage) -> ev.Event:
        values = _decode_amf_payload(message, "command")
        if not values or not isinstance(values[0], str):
            raise RtmpProtocolError(
                "command message does not start with a command name string"
            )
        name = values[0]
        if len(values) < 2 or not _is_number(values[1]):
            raise RtmpProtocolError(f"command {name!r} has no numeric transaction id")
        transaction_id = float(values[1])
        parser = _COMMAND_PARSERS.get(name)
        if parser is None:
            return ev.UnknownCommand(name, transaction_id, values[2:])
        return parser(self, message, transaction_id, values)

    def _parse_connect(
        self, message: RawMessage, transaction_id: float, values: list
    ) -> ev.Event:
        properties = values[2] if len(values) > 2 else None
        if not isinstance(properties, dict):
            raise RtmpProtocolError("connect command has no command object")
        app = properties.get("app")
        if not isinstance(app, str):
            raise RtmpProtocolError(
                f"connect command object has app={app!r}, expected a string"
            )
        tc_url = properties.get("tcUrl")
        encoding = properties.get("objectEncoding", 0)
        self._object_encoding = float(encoding) if _is_number(encoding) else 0.0
        return ev.ConnectRequest(
            transaction_id,
            app,
            tc_url if isinstance(tc_url, str) else None,
            properties,
        )

    def _parse_stream_name_command(
        self, message: RawMessage, transaction_id: float, values: list
    ) -> ev.Event:
        name = _string_argument(values, 3, "stream name")
        event_class = _STREAM_NAME_EVENTS[values[0]]
        return event_class(transaction_id, name)

    def _parse_create_stream(
        self, message: RawMessage, transaction_id: float, values: list
    ) -> ev.Event:
        return ev.CreateStream(transaction_id)

    def _parse_publish(
        self, message: RawMessage, transaction_id: float, values: list
    ) -> ev.Event:
        full_name = _string_argument(values, 3, "stream name")
        publish_type = values[4] if len(values) > 4 else None
        if not isinstance(publish_type, str):
            publish_type = "live"
        name, _, query = full_name.partition("?")
        return ev.PublishRequest(
            transaction_id, message.message_stream_id, name, publish_type, query
        )

    def _parse_play(
        self, message: RawMessage, transaction_id: float, values: list
    ) -> ev.Event:
        name = _string_argument(values, 3, "stream name")
        return ev.PlayRequest(transaction_id, message.message_stream_id, name)

    def _parse_delete_stream(
        self, message: RawMessage, transaction_id: float, values: list
    ) -> ev.Event:
        stream_id = values[3] if len(values) > 3 else None
        if not _is_number(stream_id) or not 0 <= stream_id <= 0xFFFFFFFF:
            raise RtmpProtocolError(
                f"deleteStream has stream id {stream_id!r}, expected a number"
            )
        return ev.DeleteStream(int(stream_id))

    def _parse_close_stream(
        self, message: RawMessage, transaction_id: float, values: list
    ) -> ev.Event:
        return ev.CloseStream(message.message_stream_id)

    # Replies

    def accept_connect(self, transaction_id: float) -> None:
        """Queue the control messages and the _result that accept a connect."""
        self._send_control(
            MessageType.WINDOW_ACKNOWLEDGEMENT_SIZE, _u32(WINDOW_ACKNOWLEDGEMENT_SIZE)
        )
        self._send_control(
            MessageType.SET_PEER_BANDWIDTH,
            _u32(PEER_BANDWIDTH) + bytes([_PEER_BANDWIDTH_DYNAMIC]),
        )
        self._send_control(MessageType.SET_CHUNK_SIZE, _u32(OUTGOING_CHUNK_SIZE))
        self._writer.chunk_size = OUTGOING_CHUNK_SIZE
        properties = {"fmsVer": FMS_VERSION, "capabilities": CAPABILITIES}
        information = {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": self._object_encoding,
        }
        self._send_command(0, ["_result", transaction_id, properties, information])

    def reject_connect(self, transaction_id: float, description: str) -> None:
        """Queue an _error with NetConnection.Connect.Rejected."""
        information = {
            "level": "error",
            "code": "NetConnection.Connect.Rejected",
            "description": description,
        }
        self._send_command(0, ["_error", transaction_id, None, information])

    def accept_create_stream(self, transaction_id: float) -> int:
        """Queue the _result of createStream and return the new message stream id."""
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self._send_command(0, ["_result", transaction_id, None, stream_id])
        return stream_id

    def answer_release_stream(self, transaction_id: float) -> None:
        self._send_command(0, ["_result", transaction_id, None, None])

    def answer_fcpublish(self, name: str) -> None:
        information = {"code": "NetStream.Publish.Start", "description": name}
        self._send_command(0, ["onFCPublish", 0, None, information])

    def answer_fcunpublish(self, name: str) -> None:
        information = {"code": "NetStream.Unpublish.Success", "description": name}
        self._send_command(0, ["onFCUnpublish", 0, None, information])

    def accept_publish(self, message_stream_id: int, name: str) -> None:
        """Queue User Control Stream Begin and onStatus NetStream.Publish.Start."""
        self._send_user_control(_USER_CONTROL_STREAM_BEGIN, message_stream_id)
        self._send_on_status(
            message_stream_id,
            {
                "level": "status",
                "code": "NetStream.Publish.Start",
                "description": "Started publishing stream.",
                "details": name,
            },
        )

    def reject_publish(
        self, message_stream_id: int, code: str, description: str
    ) -> None:
        """Queue onStatus at level "error", e.g. code NetStream.Publish.BadName."""
        self.send_status(message_stream_id, "error", code, description)

    def send_status(
        self, message_stream_id: int, level: str, code: str, description: str
    ) -> None:
        self._send_on_status(
            message_stream_id,
            {"level": level, "code": code, "description": description},
        )

    def send_error(self, transaction_id: float, description: str) -> None:
        """Queue an _error (NetConnection.Call.Failed) for an unsupported command."""
        information = {
            "level": "error",
            "code": "NetConnection.Call.Failed",
            "description": description,
        }
        self._send_command(0, ["_error", transaction_id, None, information])

    def send_ping_request(self, timestamp: int) -> None:
        """Queue a User Control PingRequest; the reply becomes a PingResponse event."""
        self._send_user_control(_USER_CONTROL_PING_REQUEST, timestamp & 0xFFFFFFFF)

    # Output helpers

    def _send_on_status(self, message_stream_id: int, information: dict) -> None:
        self._outgoing += self._writer.write(
            _STREAM_CHUNK_STREAM,
            MessageType.COMMAND_AMF0,
            message_stream_id,
            0,
            amf0.encode_all(["onStatus", 0, None, information]),
        )

    def _send_command(self, message_stream_id: int, values: list) -> None:
        # Replies are AMF0 even to AMF3 commands, which FFmpeg and OBS accept.
        self._outgoing += self._writer.write(
            _COMMAND_CHUNK_STREAM,
            MessageType.COMMAND_AMF0,
            message_stream_id,
            0,
            amf0.encode_all(values),
        )

    def _send_control(self, type_id: int, payload: bytes) -> None:
        self._outgoing += self._writer.write(
            _CONTROL_CHUNK_STREAM, type_id, 0, 0, payload
        )

    def _send_user_control(self, event_type: int, value: int) -> None:
        payload = event_type.to_bytes(2, "big") + _u32(value)
        self._send_control(MessageType.USER_CONTROL, payload)

    def _acknowledge_if_due(self) -> None:
        """Send an Acknowledgement once the peer's window has been received."""
        if not self.peer_window_size:
            return
        if self.bytes_received - self._acknowledged < self.peer_window_size:
            return
        self._acknowledged = self.bytes_received
        sequence_number = self.bytes_received & 0xFFFFFFFF
        self._send_control(MessageType.ACKNOWLEDGEMENT, _u32(sequence_number))


_STREAM_NAME_EVENTS = {
    "releaseStream": ev.ReleaseStream,
    "FCPublish": ev.FCPublish,
    "FCUnpublish": ev.FCUnpublish,
}

_COMMAND_PARSERS = {
    "connect": ServerProtocol._parse_connect,
    "releaseStream": ServerProtocol._parse_stream_name_command,
    "FCPublish": ServerProtocol._parse_stream_name_command,
    "FCUnpublish": ServerProtocol._parse_stream_name_command,
    "createStream": ServerProtocol._parse_create_stream,
    "publish": ServerProtocol._parse_publish,
    "play": ServerProtocol._parse_play,
    "deleteStream": ServerProtocol._parse_delete_stream,
    "closeStream": ServerProtocol._parse_close_stream,
}


def _parse_media_or_data(message: RawMessage) -> ev.Event:
    stream_id = message.message_stream_id
    if message.type_id == MessageType.AUDIO:
        return ev.AudioData(stream_id, message.timestamp, message.payload)
    if message.type_id == MessageType.VIDEO:
        return ev.VideoData(stream_id, message.timestamp, message.payload)
    return _parse_data(message)


def _parse_data(message: RawMessage) -> ev.DataMessage:
    """Decode a data message, removing the @setDataFrame wrapper of onMetaData."""
    values = _decode_amf_payload(message, "data")
    if values and values[0] == "@setDataFrame":
        values = values[1:]
    if not values or not isinstance(values[0], str):
        raise RtmpProtocolError("data message does not start with a name string")
    return ev.DataMessage(
        message.message_stream_id, message.timestamp, values[0], values[1:]
    )


def _decode_amf_payload(message: RawMessage, kind: str) -> list:
    """Decode the AMF0 values of a command or data message.

    AMF3 command and data messages (types 17 and 15) start with a format
    byte 0x00 followed by AMF0 values, any of which may switch to AMF3.
    """
    payload = message.payload
    amf3_types = (MessageType.COMMAND_AMF3, MessageType.DATA_AMF3)
    if message.type_id in amf3_types and payload[:1] == b"\x00":
        payload = payload[1:]
    if not payload:
        raise RtmpProtocolError(f"{kind} message of type {message.type_id} is empty")
    return amf0.decode_all(payload)


def _string_argument(values: list, index: int, field: str) -> str:
    value = values[index] if len(values) > index else None
    if not isinstance(value, str):
        raise RtmpProtocolError(
            f"command {values[0]!r} has {field} {value!r}, expected a string"
        )
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_u32(message: RawMessage, name: str) -> int:
    if len(message.payload) < 4:
        raise RtmpProtocolError(
            f"{name} message has {len(message.payload)} bytes, expected 4"
        )
    return int.from_bytes(message.payload[:4], "big")


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")
