"""Two reference HTTP servers for ``bench/hls_serving.py --references``.

Each serves the files below a folder at ``/hls/...``, with no access checks
and no per-viewer playlists, as nginx does in that benchmark. Their
throughput shows how far a Python server on asyncio gets on the same
machine, and so separates the cost of the box's own work from the cost of
Python and its HTTP stack:

- ``aiohttp``: one aiohttp route. Segments go out through the response
  class that the box itself uses for them (sendfile on a corked socket).
  Playlists are read from disk on each request.
- ``asyncio``: an asyncio protocol that reads only the request line,
  ignores every header, and sends segments as the box's front door does,
  with its helpers (the headers with MSG_MORE, then sendfile). It is a
  measuring tool, not a web server. It has no limits and no checks beyond
  rejecting ``..`` in paths, and it listens on 127.0.0.1 only.

Usage: python bench/hls_reference.py {aiohttp,asyncio} PORT FOLDER
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiohttp import web

# The segment response of the box and the helpers that it sends with.
from realcast_box.hls.routes import (
    CONTENT_TYPES,
    SendfileResponse,
    send_with_more,
    sendfile_now,
    set_cork,
)

HOST = "127.0.0.1"
MAX_REQUEST_BYTES = 16 * 1024


def file_for(root: Path, path: str) -> Path | None:
    """Return the file below ``root`` that the URL path ``/hls/...`` refers to."""
    relative = path.split("?", 1)[0].removeprefix("/hls/")
    if not relative or ".." in relative.split("/") or relative.startswith("/"):
        return None
    candidate = root / relative
    return candidate if candidate.is_file() else None


def content_type(file: Path) -> str:
    return CONTENT_TYPES.get(file.suffix, "application/octet-stream")


def segment_response(file: Path, headers: dict[str, str]) -> web.StreamResponse:
    opened = open(file, "rb", buffering=0)  # closed by the response
    size = os.fstat(opened.fileno()).st_size
    return SendfileResponse(opened, size, headers, plain=True)


def aiohttp_app(root: Path) -> web.Application:
    async def serve(request: web.Request) -> web.StreamResponse:
        file = file_for(root, request.path)
        if file is None:
            raise web.HTTPNotFound()
        headers = {"Content-Type": content_type(file), "Cache-Control": "no-cache"}
        if file.suffix == ".m3u8":
            return web.Response(body=file.read_bytes(), headers=headers)
        return segment_response(file, headers)

    app = web.Application()
    app.router.add_get("/hls/{path:.+}", serve)
    return app


class RequestLineServer(asyncio.Protocol):
    """Protocol that serves HTTP/1.1 keep-alive GETs from the request line alone."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            path = parts[1].decode("latin-1") if len(parts) == 3 else ""
            self.answer(file_for(self.root, path))
        if len(self.buffer) > MAX_REQUEST_BYTES and self.transport is not None:
            self.transport.close()

    def answer(self, file: Path | None) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if file is None:
            transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        if file.suffix == ".m3u8":
            body = file.read_bytes()
            transport.write(self.head(file, len(body)) + body)
            return
        with open(file, "rb", buffering=0) as opened:
            size = os.fstat(opened.fileno()).st_size
            head = self.head(file, size)
            count = 0
            if transport.get_write_buffer_size() == 0:
                count = send_with_more(transport, head)
            corked = False
            if count < len(head):
                corked = set_cork(transport, True)
                transport.write(head[count:])
            sent = 0
            if transport.get_write_buffer_size() == 0:
                sent = sendfile_now(transport, opened, size)
            if corked:
                set_cork(transport, False)
            if sent < size:
                # This is rare on loopback. The transport buffers what is left.
                opened.seek(sent)
                transport.write(opened.read(size - sent))

    @staticmethod
    def head(file: Path, length: int) -> bytes:
        return (
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type(file)}\r\n"
            f"Content-Length: {length}\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()


async def serve_request_lines(root: Path, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RequestLineServer(root), HOST, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in ("aiohttp", "asyncio"):
        raise SystemExit(__doc__.rsplit("Usage: ", 1)[1].strip())
    kind, port, root = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    if not root.is_dir():
        raise SystemExit(f"folder not found: {root}")
    if kind == "aiohttp":
        app = aiohttp_app(root)
        web.run_app(app, host=HOST, port=port, access_log=None, print=None)
    else:
        asyncio.run(serve_request_lines(root, port))


if __name__ == "__main__":
    main()
