"""Events that ServerProtocol.receive_data() returns, one per client action.

Transaction ids are AMF0 numbers, so they are floats. Timestamps are the
absolute 32-bit RTMP timestamps in milliseconds; they wrap after about 49.7
days and the consumer handles the wraparound.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HandshakeComplete:
    """The client sent C2; RTMP chunks follow."""


@dataclass(frozen=True)
class ConnectRequest:
    """connect: properties is the whole command object (app, tcUrl, flashVer...)."""

    transaction_id: float
    app: str
    tc_url: str | None
    properties: dict


@dataclass(frozen=True)
class ReleaseStream:
    transaction_id: float
    name: str


@dataclass(frozen=True)
class FCPublish:
    transaction_id: float
    name: str


@dataclass(frozen=True)
class FCUnpublish:
    transaction_id: float
    name: str


@dataclass(frozen=True)
class CreateStream:
    transaction_id: float


@dataclass(frozen=True)
class PublishRequest:
    """publish: name is the stream key without its "?query" part, kept in query.

    publish_type is "live", "record" or "append" as the client sent it, and
    "live" when the client left it out.
    """

    transaction_id: float
    message_stream_id: int
    name: str
    publish_type: str
    query: str = ""


@dataclass(frozen=True)
class DeleteStream:
    """deleteStream: message_stream_id is the stream id given as its argument."""

    message_stream_id: int


@dataclass(frozen=True)
class CloseStream:
    """closeStream: message_stream_id is the stream the command was sent on."""

    message_stream_id: int


@dataclass(frozen=True)
class PlayRequest:
    transaction_id: float
    message_stream_id: int
    name: str


# Media events come once per message, so they are slotted, not frozen. A
# frozen dataclass's __init__ took about four times as long (timeit, 3.11).
@dataclass(slots=True)
class AudioData:
    """An audio message: payload is an FLV AUDIODATA body."""

    message_stream_id: int
    timestamp: int
    payload: bytes = field(repr=False)


@dataclass(slots=True)
class VideoData:
    """A video message: payload is an FLV VIDEODATA body."""

    message_stream_id: int
    timestamp: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class DataMessage:
    """A data message such as onMetaData, with @setDataFrame removed.

    The client's ("@setDataFrame", "onMetaData", {...}) arrives as
    name="onMetaData", values=[{...}]. ECMA arrays are dicts.
    """

    message_stream_id: int
    timestamp: int
    name: str
    values: list


@dataclass(frozen=True)
class PingResponse:
    """The client's reply to a ping request sent with send_ping_request()."""

    timestamp: int


@dataclass(frozen=True)
class UnknownCommand:
    """A command this core does not interpret.

    arguments contains every value after the transaction id, the command object
    included.
    """

    name: str
    transaction_id: float
    arguments: list


Event = (
    HandshakeComplete
    | ConnectRequest
    | ReleaseStream
    | FCPublish
    | FCUnpublish
    | CreateStream
    | PublishRequest
    | DeleteStream
    | CloseStream
    | PlayRequest
    | AudioData
    | VideoData
    | DataMessage
    | PingResponse
    | UnknownCommand
)
