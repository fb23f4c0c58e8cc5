"""Read batching on a publisher's socket (rtmp/batching.py), on real sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from realcast_box.appkeys import RTMP_SERVER
from realcast_box.rtmp import batching
from realcast_box.rtmp.batching import ReadBatcher
from tests import rtmp_client as rc
from tests.box import start_box
from tests.flvfile import encode_flv, read_tags
from tests.test_ingest_raw import RawPublisher


def server_threshold(box) -> int:
    """Return SO_RCVLOWAT of the box's side of its only RTMP connection."""
    (connection,) = box.app[RTMP_SERVER]._connections
    sock = connection._writer.transport.get_extra_info("socket")
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


async def wait_for_result(publisher: RawPublisher, transaction: int) -> None:
    """Read the box's replies until the _result of ``transaction`` arrives."""
    while True:
        chunk = await publisher.reader.read(65536)
        assert chunk, "the box closed the connection"
        publisher.received += chunk
        for message in publisher.decoder.decode(bytes(publisher.received)):
            if message.type_id != rc.COMMAND_AMF0:
                continue
            values = message.values()
            if values[:2] == ["_result", transaction]:
                return
        publisher.received.clear()


@pytest.mark.timeout(60)
async def test_batching_small_commands_not_stuck(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    tags = read_tags(encode_flv(seconds=3, width=640, height=360))
    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    await publisher.publish()
    thresholds = []
    try:
        # About 350 KB in about 1.5 s: far above the rate where batching
        # starts (MIN_BATCH_BYTES per BATCH_SECONDS, about 100 KB/s).
        for index in range(0, len(tags), 4):
            await publisher.send_tags(tags[index : index + 4])
            await asyncio.sleep(0.02)
            thresholds.append(server_threshold(box))
        # The media stops. deleteStream and createStream are a few dozen
        # bytes, below the threshold in force, so they wait in the kernel
        # until a tick that saw no bytes turns batching off.
        await publisher.unpublish()
        publisher.writer.write(publisher.encoder.command(["createStream", 9, None]))
        await publisher.writer.drain()
        async with asyncio.timeout(5):
            await wait_for_result(publisher, 9)
        after = server_threshold(box)
    finally:
        await publisher.close()

    assert max(thresholds) >= batching.MIN_BATCH_BYTES
    assert after == 1


async def test_batching_threshold_follows_rate() -> None:
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    received = 0
    batcher = ReadBatcher(server, lambda: received, loop)
    try:
        batcher.start()
        # 500 KB/s for five ticks: 20 ms of it is 10,000 bytes.
        for _ in range(5):
            received += 50_000
            batcher._last_time = loop.time() - 0.1
            batcher._tick()
        steady = batcher.threshold
        kernel = server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)
        # A small swing keeps the value; a tick without bytes turns it off.
        received += 45_000
        batcher._last_time = loop.time() - 0.1
        batcher._tick()
        swung = batcher.threshold
        batcher._last_time = loop.time() - 0.1
        batcher._tick()
        idle = batcher.threshold
        # A slow stream (50 KB/s) is read as it comes.
        for _ in range(3):
            received += 5_000
            batcher._last_time = loop.time() - 0.1
            batcher._tick()
        slow = batcher.threshold
    finally:
        batcher.stop()
        for sock in (client, server, listener):
            sock.close()

    assert 9_000 <= steady <= 10_000
    assert kernel == steady
    assert swung == steady
    assert idle == 1
    assert slow == 1
