"""Fewer, larger reads from a publisher's socket.

A 3 Mbit/s publisher sends about 77 messages a second, and the kernel
wakes the event loop for nearly every one: about 60 reads a second, each
costing an epoll wake-up, a callback and a parse. With SO_RCVLOWAT set, a
socket counts as readable only once that many bytes wait, so each read
carries several messages. In bench/ingest.py (40 publishers of 3 Mbit/s) a
threshold of 20 ms of media cut the box's CPU per stream by about a third
(0.53% to 0.35% of a core) and its reads by three quarters.

The threshold follows the publisher's measured byte rate, so it holds back
about BATCH_SECONDS of media, and it is off for slow streams, where a
fixed threshold would delay media for longer. The kernel does not report
bytes below the threshold as readable. So when a publisher stops sending,
or sends a small command and waits for the reply, a tick that saw no bytes
turns the threshold off until the next tick measures the rate again. End
of stream and errors are reported whatever the threshold. Linux honours
SO_RCVLOWAT for TCP in poll and epoll; where setting it fails, reads stay
as they were.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

logger = logging.getLogger(__name__)

# Media the kernel may hold back while the stream flows, in seconds.
BATCH_SECONDS = 0.02
# How often the threshold follows the byte rate, in seconds. It also bounds
# how long bytes below the threshold can wait: about two ticks.
TICK_SECONDS = 0.1
# Below this threshold (about 0.8 Mbit/s at BATCH_SECONDS) batching is off.
MIN_BATCH_BYTES = 2048
MAX_BATCH_BYTES = 64 * 1024
# Weight of the newest tick in the smoothed byte rate. Reads come in bursts
# of a frame or more, so the bytes of one tick swing by half either way.
RATE_SMOOTHING = 0.2


class ReadBatcher:
    """Setter of one socket's SO_RCVLOWAT to about BATCH_SECONDS of its media.

    ``bytes_received`` returns the bytes the connection has read so far.
    """

    def __init__(
        self,
        sock: socket.socket,
        bytes_received: Callable[[], int],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._socket = sock
        self._bytes_received = bytes_received
        self._loop = loop
        self._threshold = 1
        self._rate = 0.0  # bytes per second, smoothed over ticks
        self._last_bytes = bytes_received()
        self._last_time = loop.time()
        self._handle: asyncio.TimerHandle | None = None

    @property
    def threshold(self) -> int:
        """The SO_RCVLOWAT value in force, 1 when batching is off."""
        return self._threshold

    def start(self) -> None:
        if self._handle is None:
            self._last_bytes = self._bytes_received()
            self._last_time = self._loop.time()
            self._handle = self._loop.call_later(TICK_SECONDS, self._tick)

    def stop(self) -> None:
        """Stop following the rate and read every byte as it comes again."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._set(1)

    def _tick(self) -> None:
        now = self._loop.time()
        total = self._bytes_received()
        received = total - self._last_bytes
        elapsed = now - self._last_time
        self._last_bytes, self._last_time = total, now
        threshold = 1
        if received > 0 and elapsed > 0:
            sample = received / elapsed
            if self._rate == 0.0:
                self._rate = sample
            else:
                self._rate += RATE_SMOOTHING * (sample - self._rate)
            threshold = min(int(self._rate * BATCH_SECONDS), MAX_BATCH_BYTES)
            if threshold < MIN_BATCH_BYTES:
                threshold = 1
            elif abs(threshold - self._threshold) <= self._threshold // 4:
                threshold = self._threshold  # small drifts keep the value in force
        else:
            # No bytes came: the publisher paused, slowed down a lot, or waits
            # for the reply to a small command. So every byte is read at once.
            self._rate = 0.0
        if self._set(threshold):
            self._handle = self._loop.call_later(TICK_SECONDS, self._tick)
        else:
            self._handle = None

    def _set(self, threshold: int) -> bool:
        """Apply ``threshold`` and return True, or False when setting it fails."""
        if threshold == self._threshold:
            return True
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, threshold)
        except OSError as exc:
            logger.debug("setting SO_RCVLOWAT to %d failed: %s", threshold, exc)
            return False
        self._threshold = threshold
        return True
