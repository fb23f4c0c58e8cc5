"""RTMP ingest: a sans-IO protocol core (bytes in, events out) and its server."""

from realcast_box.rtmp.errors import AmfError, RtmpProtocolError
from realcast_box.rtmp.protocol import ServerProtocol

__all__ = ["AmfError", "RtmpProtocolError", "ServerProtocol"]
