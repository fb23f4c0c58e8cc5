"""Asyncio glue around the sans-IO RTMP core: accept, time out, authorize.

Each TCP connection gets an ``RtmpConnection`` that reads bytes, hands them to
``ServerProtocol``, acts on the events (stream-key check, hub calls, media
fan-out) and writes the protocol's replies. Stream keys are secrets: logs name
the stream id, never the key.

A connection that ends without an unpublish (a network drop, a killed
encoder, a read timeout) leaves its session in the hub's reconnect window.
An unpublish (FCUnpublish or deleteStream), rejected media, and closes from
the box's side (kick, takeover, shutdown) end the session at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from realcast_box.live.hub import Hub, PublishRejected
from realcast_box.live.publication import Publisher
from realcast_box.media.flv import UnsupportedCodec
from realcast_box.rtmp import events as ev
from realcast_box.rtmp.batching import ReadBatcher
from realcast_box.rtmp.errors import RtmpProtocolError
from realcast_box.rtmp.protocol import ServerProtocol
from realcast_box.store import streams as stream_store
from realcast_box.store.db import Database

logger = logging.getLogger(__name__)

# A client must finish the handshake and start publishing within this many
# seconds of connecting, so that slow or idle sockets cannot pile up.
SETUP_TIMEOUT = 30.0
# A publisher needs one message stream; a few more cover clients that retry.
MAX_CREATED_STREAMS = 8
# Seconds a closing RTMPS connection waits for the client's TLS close_notify.
TLS_SHUTDOWN_TIMEOUT = 2.0
# RTMP application name in rtmp://HOST/live; OBS calls it the "Server" path.
APPLICATION = "live"
_MEDIA_EVENTS = (ev.VideoData, ev.AudioData)

# Called after a publish with a stream key that matches no stream, with the
# client's "host:port" and the stream id that the key names (None when the
# key does not have the shape of a stream key). The key itself is not passed.
InvalidKeyHook = Callable[[str, str | None], Awaitable[None]]


class RtmpServer:
    """Listens for RTMP publishers and runs one RtmpConnection per client."""

    def __init__(
        self,
        hub: Hub,
        database: Database,
        *,
        read_timeout: float,
        max_message_size: int,
        max_connections: int = 256,
        on_invalid_stream_key: InvalidKeyHook | None = None,
    ) -> None:
        self._hub = hub
        self._on_invalid_stream_key = on_invalid_stream_key
        self._database = database
        self._read_timeout = read_timeout
        self._max_message_size = max_message_size
        self._max_connections = max_connections
        self._rejected_connections = 0
        # Connections accepted since start, the rejected ones not included.
        self.accepted_connections = 0
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._connections: set[RtmpConnection] = set()
        # Transports of RTMPS connections accepted and still in the TLS
        # handshake.
        self._handshakes: set[asyncio.Transport] = set()
        # Tasks of RTMPS connections, from accept to close.
        self._tasks: set[asyncio.Task] = set()

    @property
    def sockets(self) -> list:
        """Listening sockets of plain RTMP."""
        return list(self._server.sockets) if self._server else []

    @property
    def open_connections(self) -> int:
        """Connections open now, RTMPS ones still in the TLS handshake included."""
        return len(self._connections) + len(self._handshakes)

    @property
    def rejected_connections(self) -> int:
        """Connections closed at once since start because of rtmp_max_connections."""
        return self._rejected_connections

    @property
    def tls_sockets(self) -> list:
        """Listening sockets of RTMPS, empty until start_tls."""
        return list(self._tls_server.sockets) if self._tls_server else []

    async def start(self, host: str, port: int) -> None:
        """Listen for plain RTMP on ``host``:``port``."""
        self._server = await asyncio.start_server(self._accept, host, port)

    async def start_tls(
        self, host: str, port: int, ssl_context: ssl.SSLContext
    ) -> None:
        """Listen for RTMPS (RTMP inside TLS) on ``host``:``port``.

        Connections share the plain port's limit and protocol handling. A
        connection counts from the moment it is accepted, so clients that
        open sockets and never finish the TLS handshake cannot hold more than
        rtmp_max_connections of them. The handshake has the read timeout as
        its limit, and a client that fails it, such as one that speaks plain
        RTMP here, is closed.
        """
        loop = asyncio.get_running_loop()
        self._tls_server = await loop.create_server(
            functools.partial(_TlsAcceptor, self, ssl_context), host, port
        )

    async def close(self) -> None:
        """Stop accepting, then close every open connection."""
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        for server in servers:
            server.close()
        for transport in list(self._handshakes):
            transport.abort()
        for connection in list(self._connections):
            await connection.close("server shutting down")
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)

    def _start_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # The event loop holds only a weak reference to a task.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reject_if_full(self, transport: asyncio.BaseTransport) -> bool:
        """Abort ``transport`` and return True when rtmp_max_connections are open."""
        if self.open_connections < self._max_connections:
            return False
        self._rejected_connections += 1
        # Logged once per 100 rejections, so a connection flood does not flood the log.
        if self._rejected_connections % 100 == 1:
            logger.warning(
                "rejected RTMP connection from %s: %d connections open, the "
                "maximum (rtmp_max_connections); %d rejected so far",
                transport.get_extra_info("peername"),
                self.open_connections,
                self._rejected_connections,
            )
        transport.abort()
        return True

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self._reject_if_full(writer.transport):
            await self._serve(reader, writer, scheme="rtmp")

    async def _accept_tls(
        self, transport: asyncio.Transport, ssl_context: ssl.SSLContext
    ) -> None:
        """Run the TLS handshake on an accepted TCP connection, then serve it.

        ``transport`` must not be reading, so that no byte of the ClientHello
        is lost before loop.start_tls takes over the socket.
        """
        if self._reject_if_full(transport):
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        self._handshakes.add(transport)
        try:
            tls_transport = await loop.start_tls(
                transport,
                protocol,
                ssl_context,
                server_side=True,
                ssl_handshake_timeout=self._read_timeout,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            )
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            logger.info(
                "RTMPS connection from %s closed: TLS handshake failed: %s",
                transport.get_extra_info("peername"),
                exc,
            )
            transport.abort()
            return
        finally:
            self._handshakes.discard(transport)
        # loop.start_tls does not call connection_made on the new protocol,
        # and the reader gets its transport there.
        protocol.connection_made(tls_transport)
        writer = asyncio.StreamWriter(tls_transport, protocol, reader, loop)
        await self._serve(reader, writer, scheme="rtmps")

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, scheme: str
    ) -> None:
        connection = RtmpConnection(
            reader,
            writer,
            scheme=scheme,
            hub=self._hub,
            database=self._database,
            read_timeout=self._read_timeout,
            max_message_size=self._max_message_size,
            on_invalid_stream_key=self._on_invalid_stream_key,
        )
        self._connections.add(connection)
        self.accepted_connections += 1
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)


class _ReceiveHook(asyncio.Protocol):
    """Transport protocol that hands received bytes to an RtmpConnection.

    It replaces the StreamReaderProtocol of asyncio.start_server, which
    costs a task switch per read. Flow control and the connection loss still
    go to that protocol, so the StreamWriter's drain() and wait_closed()
    work as before.
    """

    def __init__(
        self, stream_protocol: asyncio.BaseProtocol, connection: RtmpConnection
    ) -> None:
        self._stream_protocol = stream_protocol
        self._connection = connection

    def data_received(self, data: bytes) -> None:
        self._connection._receive(data)

    def eof_received(self) -> bool:
        self._connection._stop_receiving("client closed the connection")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._stream_protocol.connection_lost(exc)
        if exc is None:
            self._connection._stop_receiving("client closed the connection")
        else:
            self._connection._stop_receiving(f"connection error: {exc}", exc)

    def pause_writing(self) -> None:
        self._stream_protocol.pause_writing()

    def resume_writing(self) -> None:
        self._stream_protocol.resume_writing()


class _TlsAcceptor(asyncio.Protocol):
    """Protocol of a just-accepted RTMPS socket, until its TLS handshake starts.

    asyncio's own TLS server runs the handshake before any callback, so it
    cannot count or refuse a connection that never finishes it. This
    protocol stops reading at once and hands the socket to
    RtmpServer._accept_tls, which checks the limit first.
    """

    def __init__(self, server: RtmpServer, ssl_context: ssl.SSLContext) -> None:
        self._server = server
        self._ssl_context = ssl_context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp_transport = cast(asyncio.Transport, transport)
        tcp_transport.pause_reading()
        self._server._start_task(
            self._server._accept_tls(tcp_transport, self._ssl_context)
        )


class RtmpConnection:
    """One RTMP client: reads, dispatches events, writes replies."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        hub: Hub,
        database: Database,
        read_timeout: float,
        max_message_size: int,
        scheme: str = "rtmp",
        on_invalid_stream_key: InvalidKeyHook | None = None,
    ) -> None:
        self._reader = reader
        self._on_invalid_stream_key = on_invalid_stream_key
        self._writer = writer
        self._hub = hub
        self._database = database
        self._read_timeout = read_timeout
        self._protocol = ServerProtocol(max_message_size=max_message_size)
        self._publisher: Publisher | None = None
        self._batcher: ReadBatcher | None = None
        # False once the session should end with this connection rather than
        # wait for the publisher to reconnect.
        self._may_reconnect = True
        self._publish_stream_id: int | None = None
        self._connected = False
        self._created_streams: set[int] = set()
        # With no publisher, the connection closes at this time, for this reason.
        self._setup_deadline = asyncio.get_running_loop().time() + SETUP_TIMEOUT
        self._setup_reason = f"no publish within {SETUP_TIMEOUT:g} s of connecting"
        self._close_reason: str | None = None
        self._loop = asyncio.get_running_loop()
        # State shared by _receive(), called by the transport, and _read_loop().
        self._pending: deque[ev.Event] = deque()
        self._wakeup = asyncio.Event()
        self._reading_paused = False
        self._last_receive = self._loop.time()
        # Why receiving ended, or the exception that ended it.
        self._receive_end: str | None = None
        self._receive_error: Exception | None = None
        peer = writer.get_extra_info("peername")
        self.client_address = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        self._scheme = scheme
        self._log_prefix = f"[{scheme} {self.client_address}]"

    async def run(self) -> None:
        logger.info("%s connected", self._log_prefix)
        reason = "client closed the connection"
        try:
            reason = await self._read_loop()
        except RtmpProtocolError as exc:
            reason = f"protocol error: {exc}"
        except TimeoutError:
            reason = f"client did not read replies for {self._read_timeout:g} s"
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            reason = self._close_reason or "cancelled"
            raise
        except Exception:
            logger.exception("%s unexpected error", self._log_prefix)
            reason = "internal error"
        finally:
            if self._close_reason is not None:
                self._may_reconnect = False
            await self._end_publication(self._close_reason or reason)
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1)
            logger.info(
                "%s closed (%s)", self._log_prefix, self._close_reason or reason
            )

    async def close(self, reason: str) -> None:
        """Close the connection from outside (kick, shutdown, takeover)."""
        if self._close_reason is None:
            self._close_reason = reason
        with contextlib.suppress(Exception):
            await self._flush()
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()

    async def _read_loop(self) -> str:
        """Act on queued events and wait for more until the connection ends.

        Media arrives through _receive(), which feeds it at once. This task
        handles the other events, in order, and the read and setup timeouts.
        """
        loop = asyncio.get_running_loop()
        transport = self._writer.transport
        transport.set_protocol(_ReceiveHook(transport.get_protocol(), self))
        # Over TLS the first bytes may reach the StreamReader together with
        # the end of the handshake, before this task ran. With the EOF fed,
        # read() returns them without waiting.
        self._reader.feed_eof()
        buffered = await self._reader.read()
        if buffered:
            self._receive(buffered)
        while self._close_reason is None:
            self._wakeup.clear()
            while self._pending:
                event = self._pending.popleft()
                if type(event) in _MEDIA_EVENTS:
                    done = self._feed_media(event)
                else:
                    done = await self._handle(event)
                if done is not None:
                    self._pending.clear()
                    await self._flush()
                    return done
            await self._flush()
            if self._receive_error is not None:
                raise self._receive_error
            if self._receive_end is not None:
                return self._receive_end
            if self._reading_paused:
                self._reading_paused = False
                transport.resume_reading()

            now = loop.time()
            due = self._last_receive + self._read_timeout
            if self._publisher is None:
                if now >= self._setup_deadline:
                    return self._setup_reason
                due = min(due, self._setup_deadline)
            if now >= due:
                return f"read timed out after {self._read_timeout:g} s"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due - now):
                    await self._wakeup.wait()
        return self._close_reason

    def _receive(self, data: bytes) -> None:
        """Parse received bytes, feed media at once and queue other events.

        Runs in the transport's callback, so a media message costs no task
        switch. Reading pauses while events wait for _read_loop(), which
        keeps them in order with the media after them.
        """
        if self._receive_end is not None or self._receive_error is not None:
            return
        self._last_receive = self._loop.time()
        pending = self._pending
        try:
            for event in self._protocol.receive_data(data):
                if pending or type(event) not in _MEDIA_EVENTS:
                    pending.append(event)
                    continue
                done = self._feed_media(event)
                if done is not None:
                    self._receive_end = done
                    break
        except Exception as exc:
            # _read_loop() raises it again, so run() reports it as a read error.
            self._receive_error = exc
        if pending and not self._reading_paused:
            self._reading_paused = True
            self._writer.transport.pause_reading()
        if pending or self._receive_end or self._receive_error:
            self._wakeup.set()
            return
        # Media only queues Acknowledgements, a few bytes per window, so they
        # are written without waiting for a drain.
        out = self._protocol.data_to_send()
        if out and not self._writer.transport.is_closing():
            self._writer.write(out)

    def _stop_receiving(self, reason: str, error: Exception | None = None) -> None:
        if self._receive_end is None and self._receive_error is None:
            self._receive_end = reason
            self._receive_error = error
        self._wakeup.set()

    async def _flush(self) -> None:
        out = self._protocol.data_to_send()
        if out and not self._writer.transport.is_closing():
            self._writer.write(out)
            # A client that never reads its replies must not hold this
            # connection open forever, so the drain shares the read timeout.
            await asyncio.wait_for(self._writer.drain(), self._read_timeout)

    async def _handle(self, event: object) -> str | None:
        """Act on one protocol event; a string return closes the connection."""
        protocol = self._protocol
        match event:
            case ev.VideoData() | ev.AudioData():
                return self._feed_media(event)
            case ev.DataMessage(name="onMetaData", values=values):
                if (
                    self._publisher is not None
                    and values
                    and isinstance(values[0], dict)
                ):
                    self._publisher.feed_metadata(values[0])
            case ev.ConnectRequest(transaction_id=tid, app=app):
                if app.strip("/").split("/")[0] != APPLICATION:
                    protocol.reject_connect(
                        tid, f"unknown application {app!r}; use rtmp://HOST/live"
                    )
                    return f"rejected connect to application {app!r}"
                protocol.accept_connect(tid)
                self._connected = True
            case ev.ReleaseStream(transaction_id=tid):
                protocol.answer_release_stream(tid)
            case ev.FCPublish(name=name):
                protocol.answer_fcpublish(name)
            case ev.CreateStream(transaction_id=tid):
                if len(self._created_streams) >= MAX_CREATED_STREAMS:
                    protocol.send_error(tid, "too many streams on one connection")
                    return "too many createStream calls"
                self._created_streams.add(protocol.accept_create_stream(tid))
            case ev.PublishRequest():
                return await self._publish(event)
            case ev.FCUnpublish(name=name):
                protocol.answer_fcunpublish(name)
                self._may_reconnect = False
            case ev.DeleteStream() | ev.CloseStream():
                if self._publisher is not None:
                    self._may_reconnect = False
                    protocol.send_status(
                        event.message_stream_id,
                        "status",
                        "NetStream.Unpublish.Success",
                        "stream unpublished",
                    )
                    await self._end_publication("publisher sent deleteStream")
            case ev.PlayRequest(transaction_id=tid, message_stream_id=msid):
                protocol.send_status(
                    msid,
                    "error",
                    "NetStream.Play.Failed",
                    "this server accepts publishers only; play over HLS",
                )
                return "rejected play request"
            case ev.UnknownCommand(name=name, transaction_id=tid):
                logger.debug("%s ignoring command %r", self._log_prefix, name)
                if tid:
                    protocol.send_error(tid, f"unsupported command {name!r}")
        return None

    async def _publish(self, event: ev.PublishRequest) -> str | None:
        protocol = self._protocol
        msid = event.message_stream_id
        if self._publisher is not None:
            protocol.reject_publish(
                msid, "NetStream.Publish.BadName", "connection already publishing"
            )
            return "second publish on one connection"
        if not self._connected or msid not in self._created_streams:
            protocol.reject_publish(
                msid,
                "NetStream.Publish.Rejected",
                "publish needs connect and createStream first",
            )
            return f"publish on message stream {msid} before connect and createStream"

        stream = await stream_store.get_stream_by_key(self._database, event.name)
        if stream is None:
            protocol.reject_publish(
                msid, "NetStream.Publish.BadName", "invalid stream key"
            )
            await self._report_invalid_key(event.name)
            return "publish with an unknown stream key"

        try:
            self._publisher = await self._hub.start(
                stream, self.client_address, self.close
            )
        except PublishRejected as exc:
            protocol.reject_publish(msid, exc.code, exc.description)
            return f"publish to stream {stream['id']} rejected: {exc.description}"

        self._publish_stream_id = msid
        self._start_batching()
        self._may_reconnect = True
        self._log_prefix = f"[{self._scheme} {self.client_address} {stream['id']}]"
        protocol.accept_publish(msid, event.name)
        logger.info(
            "%s publishing (type %s)", self._log_prefix, event.publish_type or "live"
        )
        return None

    async def _report_invalid_key(self, stream_key: str) -> None:
        """Pass a rejected publish to the hook (the audit log); errors are logged."""
        if self._on_invalid_stream_key is None:
            return
        match = None
        if len(stream_key) <= stream_store.MAX_STREAM_KEY_LENGTH:
            match = stream_store.STREAM_KEY_PATTERN.fullmatch(stream_key)
        stream_id = match.group(1) if match else None
        try:
            await self._on_invalid_stream_key(self.client_address, stream_id)
        except Exception:
            logger.exception("%s failed to report an invalid key", self._log_prefix)

    def _feed_media(self, event: ev.VideoData | ev.AudioData) -> str | None:
        # The feed methods ignore media while the publisher is not active.
        publisher = self._publisher
        if publisher is None:
            return None
        try:
            if isinstance(event, ev.VideoData):
                publisher.feed_video(event.timestamp, event.payload)
            else:
                publisher.feed_audio(event.timestamp, event.payload)
        except UnsupportedCodec as exc:
            # Sending the same media again would fail again: no reconnect.
            self._may_reconnect = False
            self._protocol.send_status(
                self._publish_stream_id or event.message_stream_id,
                "error",
                "NetStream.Publish.Rejected",
                str(exc),
            )
            return f"unsupported codec: {exc}"
        except ValueError as exc:
            self._may_reconnect = False
            return f"invalid media: {exc}"
        return None

    def _start_batching(self) -> None:
        sock = self._writer.transport.get_extra_info("socket")
        if sock is None:
            return
        if self._batcher is None:
            protocol = self._protocol
            self._batcher = ReadBatcher(
                sock, lambda: protocol.bytes_received, self._loop
            )
        self._batcher.start()

    async def _end_publication(self, reason: str) -> None:
        if self._batcher is not None:
            self._batcher.stop()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            # The client may publish again on this connection. The setup
            # deadline counts from now, not from when it connected.
            self._setup_deadline = self._loop.time() + SETUP_TIMEOUT
            self._setup_reason = (
                f"no new publish within {SETUP_TIMEOUT:g} s of the last one ending"
            )
            await self._hub.stop(publisher, reason, reconnect=self._may_reconnect)
