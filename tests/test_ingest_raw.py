"""Ingest cases that need exact control of the RTMP bytes a publisher sends.

A raw client built on tests/rtmp_client.py sends real H.264 and AAC (encoded
by PyAV into FLV in memory) so that a test can change resolution mid-stream
or offer a codec the box refuses.
"""

from __future__ import annotations

import asyncio
import logging

from realcast_box.api.audit import AUDIT_WRITER, RTMP_INVALID_STREAM_KEY
from realcast_box.appkeys import DATABASE
from tests import rtmp_client as rc
from tests.box import decode_file, download_hls, start_box
from tests.flvfile import AUDIO_TAG, VIDEO_TAG, encode_flv, read_tags

PART_SECONDS = 3.0
FPS = 30


class RawPublisher:
    """A publisher that writes hand-built RTMP bytes to the box."""

    def __init__(self, reader, writer, key: str) -> None:
        self.reader = reader
        self.writer = writer
        self.key = key
        self.encoder = rc.ClientChunkEncoder()
        self.decoder = rc.ServerMessageDecoder()
        self.received = bytearray()

    @classmethod
    async def connect(cls, port: int, key: str) -> RawPublisher:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        publisher = cls(reader, writer, key)
        writer.write(rc.client_hello())
        await reader.readexactly(1 + 2 * rc.HANDSHAKE_SIZE)
        writer.write(rc.client_ack())
        return publisher

    async def publish(self) -> None:
        encoder = self.encoder
        self.writer.write(
            encoder.command(rc.connect_command())
            + encoder.command(["createStream", 2, None])
            + encoder.set_chunk_size(4096)
            + encoder.command(
                ["publish", 3, None, self.key, "live"], 1, rc.SOURCE_CHUNK_STREAM
            )
        )
        await self.writer.drain()

    async def send_tags(self, tags, offset_ms: int = 0) -> None:
        for tag in tags:
            if tag.kind not in (AUDIO_TAG, VIDEO_TAG):
                continue
            channel = rc.MEDIA_CHUNK_STREAM if tag.kind == AUDIO_TAG else 6
            self.writer.write(
                self.encoder.message(
                    channel, tag.kind, 1, tag.timestamp + offset_ms, tag.payload
                )
            )
            await self.writer.drain()

    async def unpublish(self) -> None:
        self.writer.write(self.encoder.command(["deleteStream", 4, None, 1]))
        await self.writer.drain()

    async def status_codes(self, timeout: float = 5.0) -> list[str]:
        """Read until the server closes (or ``timeout``); return onStatus codes."""
        try:
            async with asyncio.timeout(timeout):
                while chunk := await self.reader.read(65536):
                    self.received += chunk
        except TimeoutError:
            pass
        codes = []
        for message in self.decoder.decode(bytes(self.received)):
            if message.type_id != rc.COMMAND_AMF0:
                continue
            values = message.values()
            if values[0] == "onStatus" and isinstance(values[-1], dict):
                codes.append((values[-1].get("code"), values[-1].get("description")))
        return codes

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_ingest_resolution_change_marks_discontinuity(aiohttp_client, tmp_path):
    first = read_tags(encode_flv(seconds=PART_SECONDS, width=320, height=240))
    second = read_tags(
        encode_flv(seconds=PART_SECONDS, width=640, height=360, first_frame=500)
    )
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()

    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    await publisher.publish()
    await publisher.send_tags(first)
    # The second part continues the clock, with new sequence headers first.
    last_time = max(tag.timestamp for tag in first)
    await publisher.send_tags(second, offset_ms=last_time + 1000 // FPS)
    await publisher.unpublish()
    await box.wait_for_status(stream["id"], "offline")
    await publisher.close()

    download = await download_hls(
        box.client, f"/hls/{stream['id']}/index.m3u8", tmp_path / "dl"
    )
    assert download.media_playlist.count("#EXT-X-MAP:") == 2
    assert "#EXT-X-DISCONTINUITY\n" in download.media_playlist
    assert "RESOLUTION=640x360" in download.multivariant

    before = decode_file(download.joined_files[0])
    after = decode_file(download.joined_files[1])
    assert (before.width, before.height) == (320, 240)
    assert (after.width, after.height) == (640, 360)
    assert before.video_frames + after.video_frames == 2 * PART_SECONDS * FPS
    # The clock runs on across the change.
    assert min(after.video_pts) > max(before.video_pts)


async def test_ingest_unsupported_codec_named_in_status(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()

    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    await publisher.publish()
    # Enhanced RTMP: IsExHeader, keyframe, PacketTypeSequenceStart, "hvc1".
    hevc_header = bytes([0x80 | 0x10 | 0x00]) + b"hvc1" + bytes(16)
    publisher.writer.write(publisher.encoder.message(6, rc.VIDEO, 1, 0, hevc_header))
    codes = await publisher.status_codes()
    await publisher.close()

    assert ("NetStream.Publish.Start", codes[0][1]) == codes[0]
    rejected = [description for code, description in codes if "Rejected" in code]
    assert rejected
    assert "hvc1" in rejected[0]
    status = await box.wait_for_status(stream["id"], "offline")
    assert status["status"] == "offline"


async def test_ingest_unknown_key_gets_bad_name(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    publisher = await RawPublisher.connect(box.rtmp_port, "app_x_stream_y_sk_nope")
    await publisher.publish()
    codes = await publisher.status_codes()
    await publisher.close()
    assert [code for code, _ in codes] == ["NetStream.Publish.BadName"]


async def test_ingest_garbage_closes_only_that_connection(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()

    reader, writer = await asyncio.open_connection("127.0.0.1", box.rtmp_port)
    writer.write(b"\x07" + bytes(3000))
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()

    # The server still accepts a well-behaved publisher afterwards.
    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    await publisher.publish()
    await box.wait_for_status(stream["id"], "live")
    await publisher.close()
    await box.wait_for_status(stream["id"], "offline")


async def test_ingest_publish_without_connect_rejected(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()

    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    publisher.writer.write(
        publisher.encoder.command(
            ["publish", 3, None, stream["stream_key"], "live"],
            1,
            rc.SOURCE_CHUNK_STREAM,
        )
    )
    codes = await publisher.status_codes()
    await publisher.close()

    assert [code for code, _ in codes] == ["NetStream.Publish.Rejected"]
    assert (await box.status(stream["id"]))["status"] == "created"


async def test_ingest_connection_limit(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, rtmp_max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", box.rtmp_port) for _ in range(2)]
    await asyncio.sleep(0.2)

    reader, writer = await asyncio.open_connection("127.0.0.1", box.rtmp_port)
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()

    for _, held_writer in held:
        held_writer.close()
    await asyncio.sleep(0.2)
    stream = await box.create_stream()
    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    await publisher.publish()
    await box.wait_for_status(stream["id"], "live")
    await publisher.close()


async def test_ingest_slow_handshake_closed(aiohttp_client, tmp_path, monkeypatch):
    # One byte at a time keeps resetting the read timeout; the setup deadline
    # still closes the connection. A byte that reaches the server just before
    # it closes is unread there, so the close may arrive as a reset.
    monkeypatch.setattr("realcast_box.rtmp.server.SETUP_TIMEOUT", 1.0)
    box = await start_box(aiohttp_client, tmp_path)

    reader, writer = await asyncio.open_connection("127.0.0.1", box.rtmp_port)
    hello = rc.client_hello()
    closed = False
    async with asyncio.timeout(10):
        for byte in hello[:40]:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.2)
            if reader.at_eof() or isinstance(reader.exception(), ConnectionError):
                closed = True
                break
        if not closed:
            try:
                closed = await reader.read() == b""
            except ConnectionResetError:
                closed = True
    writer.close()
    assert closed


async def test_ingest_setup_deadline_after_unpublish(
    aiohttp_client, tmp_path, monkeypatch, caplog
):
    # A publish that lasts longer than the setup timeout, then deleteStream:
    # the connection stays open for another setup timeout, then closes with
    # a reason about the ended publish, not about connecting.
    monkeypatch.setattr("realcast_box.rtmp.server.SETUP_TIMEOUT", 1.0)
    caplog.set_level(logging.INFO, logger="realcast_box.rtmp.server")
    tags = read_tags(encode_flv(seconds=PART_SECONDS, width=320, height=240))
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    await publisher.publish()
    await box.wait_for_status(stream["id"], "live")
    await publisher.send_tags(tags)
    await asyncio.sleep(1.5)
    await publisher.unpublish()
    await box.wait_for_status(stream["id"], "offline")
    await publisher.status_codes(timeout=10.0)
    # The box closed the connection: the read ended before its timeout.
    assert publisher.reader.at_eof()
    await publisher.close()

    closes = [
        record.getMessage()
        for record in caplog.records
        if "closed (" in record.getMessage()
    ]
    assert len(closes) == 1, closes
    assert "no new publish within 1 s of the last one ending" in closes[0]


async def test_ingest_bad_keys_record_one_event_a_minute(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    forged = f"{stream['app_id']}_{stream['id']}_sk_forged"
    for _ in range(5):
        publisher = await RawPublisher.connect(box.rtmp_port, forged)
        await publisher.publish()
        codes = await publisher.status_codes()
        await publisher.close()
        assert [code for code, _ in codes] == ["NetStream.Publish.BadName"]

    await box.app[AUDIT_WRITER].flush()
    rows = await box.app[DATABASE].fetchall(
        "SELECT ip_address FROM audit_logs WHERE action = ?",
        (RTMP_INVALID_STREAM_KEY,),
    )
    assert [row["ip_address"] for row in rows] == ["127.0.0.1"]
