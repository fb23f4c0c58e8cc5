"""Chat test clients: aiohttp WebSocket clients and a raw socket that stops reading."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

RECEIVE_TIMEOUT = 20.0


def chat_path(stream_id: str) -> str:
    return f"/api/streams/{stream_id}/chat"


async def receive_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """Return the next frame as a dict; fail on a close or a binary frame."""
    message = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data)
    return json.loads(message.data)


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, frame_type: str
) -> dict[str, Any]:
    """Return the next frame of ``frame_type``, skipping others (notices)."""
    for _ in range(1000):
        frame = await receive_frame(ws)
        if frame["type"] == frame_type:
            return frame
    raise AssertionError(f"no {frame_type} frame in 1000 frames")


async def receive_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, list]:
    """Read until the server closes; return the close code and frames before it."""
    frames = []
    for _ in range(1000):
        message = await ws.receive(timeout=RECEIVE_TIMEOUT)
        if message.type is aiohttp.WSMsgType.TEXT:
            frames.append(json.loads(message.data))
            continue
        assert message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ), message
        return ws.close_code, frames
    raise AssertionError("the server never closed the connection")


@dataclass
class Joined:
    ws: aiohttp.ClientWebSocketResponse
    welcome: dict[str, Any]
    history: list[dict[str, Any]]

    async def send(self, text: str) -> None:
        await self.ws.send_json({"type": "send", "text": text})

    async def next_message(self) -> dict[str, Any]:
        return (await receive_until(self.ws, "message"))["message"]


async def join(
    client: TestClient | aiohttp.ClientSession,
    stream_id: str,
    *,
    path_prefix: str = "",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> Joined:
    """Connect, send a join frame with ``fields`` and read welcome and history."""
    ws = await client.ws_connect(
        path_prefix + chat_path(stream_id), params=params, headers=headers
    )
    await ws.send_json({"type": "join", **fields})
    welcome = await receive_frame(ws)
    assert welcome["type"] == "welcome", welcome
    history = await receive_frame(ws)
    assert history["type"] == "history", history
    return Joined(ws, welcome, history["messages"])


async def join_rejected(
    client: TestClient, stream_id: str, **fields: Any
) -> tuple[int, dict[str, Any]]:
    """Join and expect a rejection; return the close code and the error frame."""
    ws = await client.ws_connect(chat_path(stream_id))
    await ws.send_json({"type": "join", **fields})
    code, frames = await receive_close(ws)
    await ws.close()
    assert len(frames) == 1, frames
    assert frames[0]["type"] == "error", frames
    return code, frames[0]


class StalledClient:
    """A WebSocket client on a raw socket that joins and then never reads.

    Its receive buffer is made small, so the server's writes back up after
    a few hundred kilobytes instead of filling megabytes of kernel buffers.
    """

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, host: str, port: int, path: str, join: dict) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        self.writer = writer
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECEIVE_TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101"), head
        writer.write(masked_text_frame(json.dumps(join).encode()))
        await writer.drain()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


def masked_text_frame(payload: bytes) -> bytes:
    """Encode one final, masked text frame as a client must send it (RFC 6455)."""
    header = bytearray([0x81])
    if len(payload) < 126:
        header.append(0x80 | len(payload))
    else:
        header.append(0x80 | 126)
        header += struct.pack("!H", len(payload))
    mask = os.urandom(4)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes(header) + mask + body
