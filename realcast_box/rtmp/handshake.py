"""Server side of the simple RTMP handshake (RTMP 1.0 specification, section 5.2).

The client sends C0 (the version byte, 3) and C1 (1536 bytes: time, four
zero bytes, random data). The server replies with S0, S1 and S2 at once, S2
being an echo of C1, and then waits for C2. S1 carries no Flash Player 9 digest:
FFmpeg (libavformat/rtmpproto.c) checks that digest only when it plays a
stream and S1's version bytes are 3 or more, never when it publishes.
C2's content is not checked, since clients fill it in different ways.

NOTE: OBS's librtmp is expected to accept the simple handshake as well, but
only FFmpeg's client is exercised by the tests.
"""

from __future__ import annotations

import os
import time
from enum import Enum

from realcast_box.rtmp.errors import RtmpProtocolError

RTMP_VERSION = 3
PACKET_SIZE = 1536


class HandshakeState(Enum):
    WAIT_C0_C1 = "wait_c0_c1"
    WAIT_C2 = "wait_c2"
    DONE = "done"


class ServerHandshake:
    """Buffer at most one handshake packet and produce the server's reply.

    feed() returns the bytes left over after the handshake completes, which
    belong to the chunk stream.
    """

    def __init__(self) -> None:
        self.state = HandshakeState.WAIT_C0_C1
        self._buffer = bytearray()
        self._reply = bytearray()
        self._epoch = time.monotonic()

    @property
    def done(self) -> bool:
        return self.state is HandshakeState.DONE

    def feed(self, data: bytes) -> bytes:
        """Consume handshake bytes; return what follows C2, or b"" before that."""
        self._buffer += data
        if self.state is HandshakeState.WAIT_C0_C1:
            if self._buffer and self._buffer[0] != RTMP_VERSION:
                raise RtmpProtocolError(
                    f"unsupported RTMP version {self._buffer[0]} in C0, expected "
                    f"{RTMP_VERSION} (RTMPE and RTMPT are not supported)"
                )
            if len(self._buffer) < 1 + PACKET_SIZE:
                return b""
            c1 = bytes(self._buffer[1 : 1 + PACKET_SIZE])
            del self._buffer[: 1 + PACKET_SIZE]
            self._reply += bytes([RTMP_VERSION]) + self._make_s1() + c1
            self.state = HandshakeState.WAIT_C2
        if self.state is HandshakeState.WAIT_C2:
            if len(self._buffer) < PACKET_SIZE:
                return b""
            rest = bytes(self._buffer[PACKET_SIZE:])
            self._buffer.clear()
            self.state = HandshakeState.DONE
            return rest
        return b""

    def data_to_send(self) -> bytes:
        """Return S0, S1 and S2 once C1 has arrived, then nothing."""
        reply = bytes(self._reply)
        self._reply.clear()
        return reply

    def _make_s1(self) -> bytes:
        milliseconds = int((time.monotonic() - self._epoch) * 1000) & 0xFFFFFFFF
        return milliseconds.to_bytes(4, "big") + bytes(4) + os.urandom(PACKET_SIZE - 8)
