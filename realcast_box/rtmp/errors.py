"""Exceptions raised by the RTMP protocol core."""

from realcast_box.errors import RealcastError


class RtmpProtocolError(RealcastError):
    """The peer sent bytes that break RTMP, so the connection must be closed.

    The message names the offending value and what was expected, and never
    contains a stream key, so the server can log it as it is.
    """


class AmfError(RtmpProtocolError):
    """An AMF0 or AMF3 value is truncated, has an unknown marker or is too large."""
