"""Benchmark: chat fan-out latency from one sender to many WebSocket clients.

Starts ``realcast-box serve`` as a child process on 127.0.0.1, connects
``--clients`` anonymous read-only clients and one streamer to one stream's
chat, and sends ``--messages`` messages one at a time: each is sent after
every client has received the previous one. A client's latency for a
message is the time from the send call to the arrival of the message frame
at that client. All clients and the sender run in this process on one event
loop, so the figures include this process's time to read and parse every
client's frame.

Prints p50, p99 and max of the per-client latencies, p50 and p99 of the
time until the last client had each message, and the server's peak RSS.
Usage:

    python bench/chat.py [--clients 1000] [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

PASSWORD = "correct horse battery"
CONNECT_BATCH = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    environment = {
        **os.environ,
        "REALCAST_RATE_LIMIT_PER_MINUTE": "1000000",
        "REALCAST_RATE_LIMIT_PER_HOUR": "10000000",
        "REALCAST_CHAT_RATE_LIMIT_MESSAGES": "100000",
        "REALCAST_LOG_LEVEL": "warning",
    }
    command = [
        sys.executable,
        "-m",
        "realcast_box",
        "serve",
        "--host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--rtmp-port",
        "0",
        "--data-dir",
        str(data_dir),
    ]
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen(command, cwd=root, env=environment)


async def wait_ready(session: aiohttp.ClientSession) -> None:
    for _ in range(300):
        try:
            async with session.get("/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the box did not respond to /healthz within 30 s")


async def create_stream(session: aiohttp.ClientSession) -> tuple[str, str]:
    """Register a user, create an app that allows anonymous readers and a stream."""
    credentials = {"email": "bench@example.com", "password": PASSWORD}
    async with session.post(
        "/api/auth/register", json={**credentials, "full_name": "Bench"}
    ) as response:
        assert response.status == 201, await response.text()
    async with session.post("/api/auth/login", json=credentials) as response:
        token = (await response.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    app_body = {"name": "Bench", "settings": {"chat_allow_anonymous": True}}
    async with session.post("/api/apps", json=app_body, headers=headers) as response:
        app_id = (await response.json())["id"]
    stream_body = {"app_id": app_id, "title": "Bench"}
    async with session.post(
        "/api/streams", json=stream_body, headers=headers
    ) as response:
        stream_id = (await response.json())["id"]
    return token, stream_id


async def join(
    session: aiohttp.ClientSession, stream_id: str, **fields: object
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"/api/streams/{stream_id}/chat")
    await ws.send_json({"type": "join", **fields})
    for expected in ("welcome", "history"):
        frame = json.loads((await ws.receive()).data)
        assert frame["type"] == expected, frame
    return ws


class Fanout:
    """Send times of messages, and arrivals at each client."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.sent_at: dict[int, float] = {}
        self.arrived: dict[int, int] = {}
        self.latencies: list[float] = []
        self.last_arrival: list[float] = []
        self.done: dict[int, asyncio.Event] = {}

    def expect(self, number: int) -> asyncio.Event:
        self.arrived[number] = 0
        self.done[number] = asyncio.Event()
        self.sent_at[number] = time.monotonic()
        return self.done[number]

    def record(self, number: int) -> None:
        latency = time.monotonic() - self.sent_at[number]
        self.latencies.append(latency)
        self.arrived[number] += 1
        if self.arrived[number] == self.clients:
            self.last_arrival.append(latency)
            self.done[number].set()


async def read_client(ws: aiohttp.ClientWebSocketResponse, fanout: Fanout) -> None:
    async for message in ws:
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(message.data)
        if frame["type"] == "message":
            fanout.record(int(frame["message"]["text"]))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def peak_rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


async def run(clients: int, messages: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(Path(data_dir), port)
        try:
            await measure(server, port, clients, messages)
        finally:
            server.terminate()
            server.wait(timeout=30)


async def measure(
    server: subprocess.Popen, port: int, clients: int, messages: int
) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(base, connector=connector) as session:
        await wait_ready(session)
        token, stream_id = await create_stream(session)
        sockets = []
        started = time.monotonic()
        for _ in range(0, clients, CONNECT_BATCH):
            batch = min(CONNECT_BATCH, clients - len(sockets))
            sockets += await asyncio.gather(
                *(join(session, stream_id) for _ in range(batch))
            )
        connect_seconds = time.monotonic() - started
        streamer = await join(session, stream_id, token=token)
        fanout = Fanout(clients)
        readers = [asyncio.create_task(read_client(ws, fanout)) for ws in sockets]
        for number in range(messages):
            done = fanout.expect(number)
            await streamer.send_json({"type": "send", "text": str(number)})
            await asyncio.wait_for(done.wait(), 30)
        for ws in [*sockets, streamer]:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)

    latencies = [seconds * 1000 for seconds in fanout.latencies]
    last = [seconds * 1000 for seconds in fanout.last_arrival]
    cpus = os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs")
    print(f"clients: {clients}, messages: {messages}")
    print(f"connect and join: {connect_seconds:.1f} s")
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(
        f"latency per client: p50 {p50:.1f} ms, p99 {p99:.1f} ms,"
        f" max {max(latencies):.1f} ms"
    )
    p50, p99 = statistics.median(last), percentile(last, 0.99)
    print(f"until the last client: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    rss = peak_rss_mib(server.pid)
    if rss is not None:
        print(f"server peak RSS: {rss:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(run(arguments.clients, arguments.messages))


if __name__ == "__main__":
    main()
