"""The plain HTTP port's front door: simple /hls GETs served without aiohttp's stack.

Players fetch a playlist or a segment several times a second each, and on
a small box aiohttp's per-request machinery (request objects, routing,
four middlewares, response preparation) cost more CPU than the HLS handler
itself. ``FrontProtocol`` reads each connection's request heads. A GET of
an /hls path in plain characters goes straight to ``serve_hls`` when it
has no body and no header that needs aiohttp (Range, preconditions,
Upgrade, Expect, ``Connection: close``). It gets the same access checks,
errors, metrics and viewer tracking, and its response is written here.
At the first request of any other kind, the connection and all it has
sent so far pass to aiohttp's own protocol for good. So the API, the UI,
WebSocket chat, HEAD and range requests behave as without the front door.

Only the plain HTTP site uses it (``FrontSite``); HTTPS stays with aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import SINGLETON_HEADERS
from aiohttp.tcp_helpers import tcp_nodelay
from aiohttp.web_server import Server
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from realcast_box.api.errors import error_response, response_for_exception
from realcast_box.hls import routes
from realcast_box.metrics.http import mark_hls_request

logger = logging.getLogger(__name__)

# A longer head goes to aiohttp, which applies its own limits (400 or 431).
MAX_HEAD_BYTES = 8190
# Bytes read ahead while a response is in progress before reading pauses.
MAX_READ_AHEAD = 64 * 1024
# An idle connection closes after this, nginx's default keepalive_timeout.
KEEPALIVE_SECONDS = 75.0
SWEEP_SECONDS = 5.0
# Targets that the front door serves itself: /hls/<stream id>/<path>, with an
# optional query, in characters that no decoder or normaliser changes. Anything else
# (percent escapes, "+", dot segments, empty segments) goes to aiohttp.
TARGET_PATTERN = re.compile(
    r"/hls/([A-Za-z0-9_-]{1,64})/((?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)*"
    r"[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:\?([A-Za-z0-9_.~=&-]*))?"
)
HEADER_NAME_PATTERN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Control characters that aiohttp rejects in a head (tab is allowed), and
# line ends other than CRLF. Such heads go to aiohttp, which responds 400.
INVALID_HEAD_PATTERN = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n"
)
# A bare LF or CR in bytes still waiting for the head's end, which then never
# comes. A CR as the last byte received may be the start of a CRLF.
BARE_LINE_END_PATTERN = re.compile(rb"(?<!\r)\n|\r(?=[^\n])")
# aiohttp 3.14 rejects more than 128 header lines (its default max_headers).
# Heads with more than this many go to aiohttp to decide.
MAX_HEADERS = 100
# Request headers that only aiohttp handles. Lower case.
AIOHTTP_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "expect",
        "upgrade",
        "range",
        "if-range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
    }
)
# Response headers that the front door writes itself. Lower case.
WRITTEN_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "date", "server"}
)


class FrontRequest(dict):
    """The parts of ``web.Request`` that ``serve_hls`` and its helpers read.

    Its items are the request's own mapping (``request[key]``), which the
    metrics hook uses.
    """

    method = "GET"

    def __init__(
        self,
        app: web.Application,
        transport: asyncio.Transport,
        remote: str | None,
        path: str,
        stream_id: str,
        relative: str,
        query: MultiDictProxy[str],
        headers: CIMultiDictProxy[str],
    ) -> None:
        super().__init__()
        self.app = app
        self.transport = transport
        self.remote = remote
        self.path = path
        self.match_info = {"stream_id": stream_id, "path": relative}
        self.query = query
        self.headers = headers

    # A dict subclass would compare by items and hash by nothing.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


def parse_head(head: bytes) -> tuple[str, str, str, str, CIMultiDictProxy[str]] | None:
    """Return (path, stream id, relative path, query, headers) of a head to serve.

    ``head`` is a request line and headers, without the blank line. None
    for a head that aiohttp must handle: another method, target or version,
    a header in AIOHTTP_HEADERS, or ``Connection`` other than keep-alive.
    Also None without ``Host``, with a second copy of a header that aiohttp
    allows once (such as ``Host``), or with anything unusual in its syntax.
    aiohttp then responds with its error.
    """
    line, fields = split_head(head)
    target = parse_request_line(line)
    if target is None:
        return None
    headers = parse_fields(fields)
    if headers is None:
        return None
    return (*target, headers)


def split_head(head: bytes) -> tuple[bytes, bytes]:
    """Split a head into its request line and the header lines after it.

    The header lines keep the CRLF that ends the request line, so a head's
    parts join again without a separator.
    """
    end = head.find(b"\r\n")
    if end < 0:
        return head, b""
    return head[:end], head[end:]


def parse_request_line(line: bytes) -> tuple[str, str, str, str] | None:
    """Return (path, stream id, relative path, query) of a request line to serve.

    None for anything but an HTTP/1.1 GET of a TARGET_PATTERN target.
    """
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return None
    method, _, rest = text.partition(" ")
    target, _, version = rest.partition(" ")
    if method != "GET" or version != "HTTP/1.1":
        return None
    match = TARGET_PATTERN.fullmatch(target)
    if match is None:
        return None
    stream_id, relative, query = match.groups()
    return target.partition("?")[0], stream_id, relative, query or ""


def parse_fields(fields: bytes) -> CIMultiDictProxy[str] | None:
    """Return the headers of the header lines that ``split_head`` returns.

    None where parse_head leaves the head to aiohttp because of its headers.
    """
    try:
        text = fields.decode("ascii")
    except UnicodeDecodeError:
        return None
    if INVALID_HEAD_PATTERN.search(text):
        return None
    lines = text.split("\r\n")
    if len(lines) > MAX_HEADERS + 1:
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            return None
        if not HEADER_NAME_PATTERN.fullmatch(name):
            return None
        lowered = name.lower()
        value = value.strip(" \t")
        if lowered in AIOHTTP_HEADERS:
            return None
        if lowered == "connection" and value.lower() != "keep-alive":
            return None
        if lowered in SINGLETON_HEADERS and name in headers:
            return None
        headers.add(name, value)
    if "Host" not in headers:
        # HTTP/1.1 requires it, and aiohttp responds with 400 without it.
        return None
    return CIMultiDictProxy(headers)


def parse_query(query: str) -> MultiDictProxy[str]:
    """Split a query in TARGET_PATTERN's characters, as aiohttp would.

    Empty pieces are dropped and a piece without "=" has an empty value.
    Those characters need no decoding.
    """
    pairs: MultiDict[str] = MultiDict()
    for piece in query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.add(name, value)
    return MultiDictProxy(pairs)


def response_head(response: web.StreamResponse, length: int) -> bytes:
    """Return the status line and headers of ``response`` with a body of ``length``."""
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    has_type = False
    for name, value in response.headers.items():
        lowered = name.lower()
        if lowered in WRITTEN_HEADERS:
            continue
        has_type = has_type or lowered == "content-type"
        lines.append(f"{name}: {value}")
    if not has_type:
        lines.append("Content-Type: application/octet-stream")
    lines.append(f"Content-Length: {length}")
    lines.append(f"Date: {routes.http_date(int(time.time()))}")
    lines.append(f"Server: {SERVER_SOFTWARE}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8")


class FrontDoor:
    """Protocol factory of a FrontSite, which also closes its connections on stop.

    Connections that hand over to aiohttp leave ``connections``: aiohttp's
    ``server`` closes those.
    """

    def __init__(self, app: web.Application, server: Server) -> None:
        self.app = app
        self.server = server
        self.connections: set[FrontProtocol] = set()
        self.closing = False
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> FrontProtocol:
        if self._sweeper is None and not self.closing:
            self._schedule_sweep()
        return FrontProtocol(self)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for KEEPALIVE_SECONDS, also with a partial head."""
        limit = asyncio.get_running_loop().time() - KEEPALIVE_SECONDS
        for connection in list(self.connections):
            connection.close_if_idle_since(limit)
        self._schedule_sweep()

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now, and the others once their response is sent.

        Responses still in progress after ``timeout`` seconds, such as
        blocked playlist reloads, are cut off.
        """
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        tasks = []
        for connection in list(self.connections):
            task = connection.task
            if task is None:
                connection.close()
            else:
                tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for connection in list(self.connections):
            connection.close()
        self.connections.clear()


class FrontProtocol(asyncio.Protocol):
    """One plain HTTP connection, served here until it needs aiohttp.

    Requests are served in order, one at a time. Bytes that arrive during a
    response wait in ``_buffer`` from ``_start`` on, so pipelined requests
    work too. Reading pauses while more than MAX_READ_AHEAD bytes wait.
    """

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._buffer = bytearray()
        self._start = 0
        self.task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._last_activity = self._loop.time()
        # The header lines and the query of the last request, and what they
        # parsed to. Both are read-only, so requests can share them.
        self._fields = b""
        self._headers: CIMultiDictProxy[str] | None = None
        self._query_text = ""
        self._query: MultiDictProxy[str] = parse_query("")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        # As aiohttp's own protocol does: responses leave without Nagle's delay.
        tcp_nodelay(transport, True)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, (list, tuple)) and peer:
            self._remote = str(peer[0])
        self._door.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._door.connections.discard(self)
        self._transport = None
        if self.task is not None:
            self.task.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._last_activity = self._loop.time()
        if self.task is None:
            self._next_request()
        self._pause_reading_if_full()

    def eof_received(self) -> bool | None:
        # As aiohttp does, a client that half-closes its side gets no more
        # responses: returning None closes the connection, and
        # connection_lost cancels the request in progress.
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self._transport is not None:
            self._transport.close()

    def close_if_idle_since(self, limit: float) -> None:
        if self.task is None and self._last_activity < limit:
            self.close()

    def _pause_reading_if_full(self) -> None:
        transport = self._transport
        if transport is None or self._reading_paused:
            return
        if len(self._buffer) - self._start > MAX_READ_AHEAD:
            transport.pause_reading()
            self._reading_paused = True

    def _resume_reading_if_room(self) -> None:
        transport = self._transport
        if transport is None or not self._reading_paused:
            return
        if len(self._buffer) - self._start <= MAX_READ_AHEAD:
            transport.resume_reading()
            self._reading_paused = False

    def _next_request(self) -> None:
        """Start on the next whole request head in the buffer, if there is one."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return

        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", self._start)
        if end < 0:
            if len(buffer) - self._start > MAX_HEAD_BYTES or (
                BARE_LINE_END_PATTERN.search(buffer, self._start)
            ):
                self._hand_over()
            else:
                self._resume_reading_if_room()
            return
        if end - self._start > MAX_HEAD_BYTES:
            self._hand_over()
            return
        line, fields = split_head(bytes(buffer[self._start : end]))
        target = parse_request_line(line)
        if fields != self._fields:
            # Players usually send the same headers with each request, so the
            # last request's stay parsed until they change.
            self._fields = fields
            self._headers = parse_fields(fields)
        headers = self._headers
        if target is None or headers is None:
            self._hand_over()
            return

        self._start = end + 4
        if self._start == len(buffer):
            buffer.clear()
            self._start = 0
        elif self._start > MAX_READ_AHEAD:
            # Drop what was read, now and then rather than per request.
            del buffer[: self._start]
            self._start = 0
        self._resume_reading_if_room()
        path, stream_id, relative, query = target
        if query != self._query_text:
            self._query_text = query
            self._query = parse_query(query)
        request = FrontRequest(
            self._door.app,
            transport,
            self._remote,
            path,
            stream_id,
            relative,
            self._query,
            headers,
        )
        self.task = self._loop.create_task(self._serve(request))
        self.task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        self.task = None
        self._last_activity = self._loop.time()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # The client left mid-response, or the response could not be
            # written: the connection cannot carry another one.
            if not isinstance(exc, ConnectionError):
                logger.error(
                    "front door failed to send a response",
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
            self.close()
            return
        if self._door.closing:
            self.close()
            return
        if self._transport is not None and len(self._buffer) > self._start:
            self._next_request()

    def _hand_over(self) -> None:
        """Give the connection, and every byte it sent, to aiohttp for good."""
        transport = self._transport
        assert transport is not None
        self._door.connections.discard(self)
        self._transport = None
        handler = self._door.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data = bytes(self._buffer[self._start :])
        self._buffer.clear()
        self._start = 0
        if self._reading_paused:
            transport.resume_reading()
            self._reading_paused = False
        if data:
            handler.data_received(data)

    async def _serve(self, request: FrontRequest) -> None:
        app = request.app
        if app.on_response_prepare:
            mark_hls_request(request, time.perf_counter())
        try:
            response = await routes.serve_hls(request)  # type: ignore[arg-type]
            if not _writable(response):
                # The file changed or went away between its lookup and its
                # open, as a segment that leaves the window does. A second
                # lookup finds the new file, or none (404).
                response = await routes.serve_hls(request)  # type: ignore[arg-type]
        except Exception as exc:
            response = response_for_exception(request, exc)  # type: ignore[arg-type]
            if response is None:
                # A redirect (an HTTPException below 400): serve_hls raises none.
                response = error_response(500, "internal server error")
        if not _writable(response):
            # serve_hls sends FileResponse only for HEAD and ranges, which go
            # to aiohttp, or for a file that changed while it was looked at.
            # It was looked at twice above, so the file keeps changing.
            logger.warning(
                "front door cannot send %s for %s; responding with 503",
                type(response).__name__,
                request.path,
            )
            response = error_response(
                503, "the file changed while it was read; retry the request"
            )
        await app.on_response_prepare.send(request, response)
        await self._write(response)

    async def _write(self, response: web.StreamResponse) -> None:
        transport = self._transport
        if transport is None:
            if isinstance(response, routes.SendfileResponse):
                response.close_file()
            raise ConnectionResetError("Connection lost")
        if isinstance(response, routes.SendfileResponse):
            head = response_head(response, response.content_length or 0)
            await response.send(
                transport, self._write_and_drain, self._write_and_drain, head=head
            )
        else:
            # _serve sends only responses that _writable accepts: bytes here.
            body = response.body  # type: ignore[attr-defined]
            transport.write(response_head(response, len(body)) + body)
        if self._writing_paused:
            await self._drain()

    async def _write_and_drain(self, data: bytes) -> None:
        if self._transport is None:
            raise ConnectionResetError("Connection lost")
        self._transport.write(data)
        if self._writing_paused:
            await self._drain()

    async def _drain(self) -> None:
        self._drained = self._loop.create_future()
        await self._drained
        self._drained = None
        if self._transport is None:
            raise ConnectionResetError("Connection lost")


def _writable(response: web.StreamResponse) -> bool:
    """Return whether FrontProtocol._write sends ``response`` as it is."""
    return isinstance(response, routes.SendfileResponse) or (
        isinstance(response, web.Response)
        and isinstance(response.body, (bytes, bytearray, memoryview))
    )


class FrontSite(web.BaseSite):
    """A plain HTTP site whose connections start at a FrontDoor.

    Give ``host`` and ``port``, or a bound ``sock``. On stop, responses in
    progress get ``shutdown_timeout`` seconds to finish.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        shutdown_timeout: float = 60.0,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._front_shutdown_timeout = shutdown_timeout
        self._host = host
        self._port = 8080 if port is None else port
        self._sock = sock
        self.door: FrontDoor | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert runner.server is not None and isinstance(runner, web.AppRunner)
        self.door = FrontDoor(runner.app, runner.server)
        loop = asyncio.get_running_loop()
        factory: Callable[[], Any] = self.door
        if self._sock is not None:
            self._server = await loop.create_server(
                factory, sock=self._sock, backlog=self._backlog
            )
        else:
            self._server = await loop.create_server(
                factory,
                self._host,
                self._port,
                backlog=self._backlog,
                reuse_address=True,
            )

    async def stop(self) -> None:
        await super().stop()
        if self.door is not None:
            await self.door.shutdown(self._front_shutdown_timeout)
