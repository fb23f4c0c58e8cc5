"""Chat rooms: one per stream with connected clients, and their fan-out.

A room sends each frame to every connection through that connection's
bounded queue and writer task, so one slow client never delays the
others. A connection whose queue is full is closed with CLOSE_SLOW_CLIENT
and logged. Messages of a room are stored and queued under the room's
lock, so every client receives them in the order they were stored, and a
joining client's history joins the live messages without a gap or a
duplicate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from realcast_box.chat import protocol
from realcast_box.chat.protocol import ChatSettings, ProtocolError
from realcast_box.events import CHAT_MESSAGE_NEW, Event, EventBus
from realcast_box.store import chat as chat_store
from realcast_box.store.db import Database
from realcast_box.store.ids import utc_now

logger = logging.getLogger(__name__)

# How long a close handshake may take before the connection is aborted.
CLOSE_TIMEOUT_SECONDS = 5.0
# Rate-limit and slow-mode state is pruned once a room tracks more senders.
MAX_TRACKED_SENDERS = 10_000


@dataclass(frozen=True)
class ChatLimits:
    """Box-wide chat limits, from the config."""

    send_queue_size: int = 100
    rate_limit_messages: int = 5
    rate_limit_seconds: float = 10.0
    history_on_join: int = 50


@dataclass(frozen=True)
class Participant:
    """The identity behind a connection; ``role`` is one of protocol's roles."""

    viewer_id: str
    display_name: str
    role: str
    user_id: str | None = None
    key_id: str | None = None

    @property
    def can_send(self) -> bool:
        return self.role != protocol.ANONYMOUS

    @property
    def is_moderator(self) -> bool:
        return self.role in protocol.MODERATOR_ROLES


@dataclass(frozen=True)
class _Close:
    """Queue item that makes the writer send a close frame and stop."""

    code: int
    reason: str


class Connection:
    """One client's WebSocket, its bounded send queue and its writer task."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        participant: Participant,
        queue_size: int,
        abort: Callable[[], None],
        label: str,
    ) -> None:
        self.ws = ws
        self.participant = participant
        self.label = label
        self.closing = False
        self._abort = abort
        self._queue: asyncio.Queue[str | _Close] = asyncio.Queue(queue_size)
        self._writer = asyncio.create_task(self._write_loop(), name=f"chat {label}")

    def offer(self, frame: str) -> bool:
        """Queue an encoded frame; close the connection if its queue is full."""
        if self.closing:
            return False
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            logger.warning(
                "chat %s: send queue full (%d frames), disconnecting slow client",
                self.label,
                self._queue.maxsize,
            )
            self._drop_slow()
            return False
        return True

    def close(self, code: int, error: str, message: str) -> None:
        """Send an error frame with ``error`` and ``message``, then close."""
        if self.closing:
            return
        frame = protocol.encode(protocol.error_frame(error, message))
        if not self.offer(frame):
            return
        try:
            self._queue.put_nowait(_Close(code, error))
        except asyncio.QueueFull:
            self._drop_slow()
            return
        self.closing = True

    async def wait_closed(self) -> None:
        """Stop the writer task once the connection's reader has ended."""
        if not self._writer.done():
            self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    def _drop_slow(self) -> None:
        self.closing = True
        self._writer.cancel()
        # The close frame cannot wait behind the full queue, so a separate
        # task sends it, and aborts the TCP connection if it stays stuck.
        task = asyncio.create_task(
            self._close_socket(protocol.CLOSE_SLOW_CLIENT, protocol.SLOW_CLIENT)
        )
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Close):
                    await self._close_socket(item.code, item.reason)
                    return
                await self.ws.send_str(item)
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away while a frame was in flight; the reader
            # sees the same and ends the connection.
            logger.debug("chat %s: send failed: %r", self.label, exc)

    async def _close_socket(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self.ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError, RuntimeError):
            logger.info("chat %s: close handshake failed, aborting", self.label)
            self._abort()


# Tasks that close slow clients, referenced until they finish.
_background: set[asyncio.Task] = set()


class SendLimiter:
    """Per-sender rate limit and slow mode of one room, on the monotonic clock."""

    def __init__(self, limits: ChatLimits, clock: Callable[[], float]) -> None:
        self._limits = limits
        self._clock = clock
        self._recent: dict[str, collections.deque[float]] = {}
        self._last: dict[str, float] = {}

    def check(self, viewer_id: str, slow_mode_seconds: int, exempt: bool) -> None:
        """Count one message, or raise RateLimitedSend with ``retry_after``."""
        now = self._clock()
        window = self._limits.rate_limit_seconds
        last = self._last.get(viewer_id)
        if slow_mode_seconds and not exempt and last is not None:
            wait = slow_mode_seconds - (now - last)
            if wait > 0:
                raise _limited(
                    protocol.SLOW_MODE,
                    f"slow mode is on: one message every {slow_mode_seconds} s",
                    wait,
                )
        recent = self._recent.setdefault(viewer_id, collections.deque())
        while recent and now - recent[0] >= window:
            recent.popleft()
        if len(recent) >= self._limits.rate_limit_messages:
            raise _limited(
                protocol.RATE_LIMITED,
                f"rate limit exceeded: at most {self._limits.rate_limit_messages}"
                f" messages per {window:g} s",
                window - (now - recent[0]),
            )
        recent.append(now)
        self._last[viewer_id] = now
        if len(self._last) > MAX_TRACKED_SENDERS:
            self._prune(now, max(window, slow_mode_seconds))

    def _prune(self, now: float, keep: float) -> None:
        idle = [
            viewer_id for viewer_id, last in self._last.items() if now - last >= keep
        ]
        for viewer_id in idle:
            del self._last[viewer_id]
            self._recent.pop(viewer_id, None)


class RateLimitedSend(ProtocolError):
    """A message rejected by the rate limit or slow mode."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


def _limited(code: str, message: str, wait: float) -> RateLimitedSend:
    retry_after = max(1, math.ceil(wait))
    return RateLimitedSend(code, f"{message}; retry in {retry_after} s", retry_after)


class Room:
    """The connections of one stream's chat."""

    def __init__(self, stream_id: str, limits: ChatLimits) -> None:
        self.stream_id = stream_id
        self.connections: set[Connection] = set()
        self.lock = asyncio.Lock()
        self.limiter = SendLimiter(limits, time.monotonic)

    def broadcast(self, frame: dict[str, Any]) -> None:
        encoded = protocol.encode(frame)
        for connection in list(self.connections):
            if not connection.offer(encoded) and connection.closing:
                # A dropped or closing client gets nothing more from the room.
                self.connections.discard(connection)

    def close_all(self, code: int, error: str, message: str) -> None:
        for connection in list(self.connections):
            connection.close(code, error, message)


class ChatHub:
    """The chat rooms of the box, created on the first join to a stream.

    ``events``, when set, receives a chat.message.new event for each stored
    message; app.py sets it to the box's event bus.
    """

    def __init__(self, limits: ChatLimits | None = None) -> None:
        self.limits = limits or ChatLimits()
        self.events: EventBus | None = None
        self._rooms: dict[str, Room] = {}
        self._closed = False

    def room(self, stream_id: str) -> Room:
        room = self._rooms.get(stream_id)
        if room is None:
            room = self._rooms[stream_id] = Room(stream_id, self.limits)
        return room

    def connection_count(self, stream_id: str) -> int:
        room = self._rooms.get(stream_id)
        return 0 if room is None else len(room.connections)

    async def join(
        self,
        database: Database,
        stream_id: str,
        ws: web.WebSocketResponse,
        participant: Participant,
        welcome: dict[str, Any],
        abort: Callable[[], None],
        label: str,
    ) -> Connection:
        """Add a connection to the stream's room and queue welcome and history."""
        room = self.room(stream_id)
        async with room.lock:
            history = await chat_store.list_messages(
                database, stream_id, limit=self.limits.history_on_join
            )
            connection = Connection(
                ws, participant, self.limits.send_queue_size, abort, label
            )
            if self._closed:
                connection.close(1001, "shutdown", "the box is shutting down")
            room.connections.add(connection)
            connection.offer(protocol.encode(welcome))
            messages = [protocol.public_message(item) for item in history or []]
            connection.offer(protocol.encode({"type": "history", "messages": messages}))
        return connection

    async def leave(self, stream_id: str, connection: Connection) -> None:
        room = self._rooms.get(stream_id)
        if room is not None:
            room.connections.discard(connection)
        await connection.wait_closed()

    async def post(
        self,
        database: Database,
        access: chat_store.ChatAccess,
        settings: ChatSettings,
        participant: Participant,
        text: str,
        *,
        apply_limits: bool = True,
    ) -> dict[str, Any]:
        """Store a message, send it to the room and publish chat.message.new.

        Raises RateLimitedSend past the rate limit or in slow mode, unless
        ``apply_limits`` is False (REST calls, which the API rate limit
        covers).
        """
        room = self.room(access.stream_id)
        if apply_limits:
            room.limiter.check(
                participant.viewer_id,
                settings.slow_mode_seconds,
                exempt=participant.is_moderator,
            )
        async with room.lock:
            message = await chat_store.insert_message(
                database,
                access.stream_id,
                participant.viewer_id,
                participant.display_name,
                participant.role,
                text,
                utc_now(),
            )
            room.broadcast(protocol.message_frame(message))
        if self.events is not None:
            await self.events.publish(
                Event(
                    type=CHAT_MESSAGE_NEW,
                    app_id=access.app_id,
                    stream_id=access.stream_id,
                    data={"message": protocol.public_message(message)},
                )
            )
        return message

    async def delete(
        self, database: Database, stream_id: str, message_id: str, deleted_by: str
    ) -> bool:
        """Delete a message for everyone; False when the stream has no such one."""
        room = self.room(stream_id)
        async with room.lock:
            deleted = await chat_store.delete_message(
                database, stream_id, message_id, deleted_by, utc_now()
            )
            if deleted:
                room.broadcast(
                    {
                        "type": "deleted",
                        "stream_id": stream_id,
                        "message_id": message_id,
                    }
                )
        return deleted

    def remove_viewer(self, stream_id: str, viewer_id: str, message: str) -> int:
        """Close the viewer's connections and tell the room; return how many."""
        room = self._rooms.get(stream_id)
        if room is None:
            return 0
        removed = [c for c in room.connections if c.participant.viewer_id == viewer_id]
        for connection in removed:
            connection.close(protocol.CLOSE_BANNED, protocol.BANNED, message)
        room.broadcast(
            {
                "type": "notice",
                "code": "viewer_banned",
                "viewer_id": viewer_id,
                "text": f"viewer {viewer_id} was removed from the chat",
            }
        )
        return len(removed)

    def notify(self, stream_id: str, code: str, text: str) -> None:
        room = self._rooms.get(stream_id)
        if room is not None:
            room.broadcast({"type": "notice", "code": code, "text": text})

    def close_room(self, stream_id: str, code: int, error: str, message: str) -> None:
        room = self._rooms.get(stream_id)
        if room is not None:
            room.close_all(code, error, message)

    def forget(self, stream_id: str) -> None:
        """Drop the room of a deleted stream; its connections must be closing."""
        self._rooms.pop(stream_id, None)

    def stream_ids(self) -> Iterable[str]:
        return list(self._rooms)

    async def close(self) -> None:
        """Close every connection with 1001 (going away); new joins are closed too."""
        self._closed = True
        for room in list(self._rooms.values()):
            room.close_all(1001, "shutdown", "the box is shutting down")
