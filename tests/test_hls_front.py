"""The HLS front door on the plain HTTP port: what it serves, what aiohttp gets."""

from __future__ import annotations

import asyncio
import os
import re
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from realcast_box.hls import front, routes
from realcast_box.hls.front import parse_head, parse_query, response_head
from tests.box import start_box
from tests.hls_helpers import SEGMENT_BYTES, create_app_and_stream, write_hls_tree

HEAD = "GET /hls/stream_1/source/seg-1.m4s?session=abc HTTP/1.1\r\nHost: box"


# --- Request heads ---------------------------------------------------------


def test_front_parse_head_plain_get():
    path, stream_id, relative, query, headers = parse_head(
        (HEAD + "\r\nOrigin: https://a.example\r\nuser-agent: ua").encode()
    )
    assert path == "/hls/stream_1/source/seg-1.m4s"
    assert (stream_id, relative, query) == (
        "stream_1",
        "source/seg-1.m4s",
        "session=abc",
    )
    assert headers["origin"] == "https://a.example"
    assert headers["User-Agent"] == "ua"


@pytest.mark.parametrize(
    "head",
    [
        HEAD.replace("GET", "HEAD"),
        HEAD.replace("GET", "POST"),
        HEAD.replace("HTTP/1.1", "HTTP/1.0"),
        "GET /hls/stream_1/index.m3u8 HTTP/1.1",
        HEAD + "\r\nRange: bytes=0-9",
        HEAD + "\r\nIf-None-Match: *",
        HEAD + "\r\nConnection: close",
        HEAD + "\r\nConnection: Upgrade\r\nUpgrade: websocket",
        HEAD + "\r\nContent-Length: 3",
        HEAD + "\r\nTransfer-Encoding: chunked",
        HEAD + "\r\nExpect: 100-continue",
        HEAD + "\r\nX-Folded: a\r\n b",
        HEAD + "\r\nBad Name: a",
        HEAD + "\r\nNo colon",
        HEAD + "\r\nX-Bare: a\nb",
        HEAD.replace("seg-1", "seg%2D1"),
        HEAD.replace("seg-1", "./seg-1"),
        HEAD.replace("seg-1", "../seg-1"),
        HEAD.replace("source/", "source//"),
        HEAD.replace("session=abc", "session=a+b"),
        HEAD.replace("session=abc", "session=a%20b"),
        HEAD.replace("/hls/", "/api/"),
        HEAD.replace("stream_1", "stream.1"),
        HEAD + "\r\nHost: other",
        HEAD + "\r\nUser-Agent: a\r\nuser-agent: b",
        HEAD + "\r\nX-Control: a\x01b",
        HEAD + "\r\nX-Delete: a\x7fb",
        HEAD + "\r\nX-Nul: a\x00b",
        HEAD + "".join(f"\r\nX-{number}: a" for number in range(front.MAX_HEADERS)),
    ],
)
def test_front_parse_head_leaves_to_aiohttp(head):
    assert parse_head(head.encode()) is None


def test_front_parse_head_non_ascii_left():
    assert parse_head(HEAD.encode() + b"\r\nX-Name: caf\xc3\xa9") is None


def test_front_parse_query_as_aiohttp():
    query = parse_query("_HLS_msn=5&&_HLS_part=1&flag&_HLS_msn=6&=x")
    assert query.get("_HLS_msn") == "5"
    assert query.getall("_HLS_msn") == ["5", "6"]
    assert query.get("_HLS_part") == "1"
    assert query.get("flag") == ""
    assert query.get("") == "x"
    assert "missing" not in query


def test_front_response_head_own_length():
    response = front.web.Response(
        body=b"12345", headers={"Content-Length": "99", "Cache-Control": "no-cache"}
    )
    head = response_head(response, 5).decode()
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert head.endswith("\r\n\r\n")
    assert "Content-Length: 5\r\n" in head
    assert "99" not in head
    assert "Cache-Control: no-cache\r\n" in head
    assert "Content-Type: application/octet-stream\r\n" in head
    assert re.search(r"\r\nDate: \w{3}, \d\d \w{3} \d{4} [\d:]{8} GMT\r\n", head)


# --- Raw connections to a box ----------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    """Read one response with a Content-Length; return status, headers and body."""
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def connect(box) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", box.client.server.port)


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: box", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def box_with_tree(aiohttp_client, tmp_path, **overrides):
    box = await start_box(aiohttp_client, tmp_path, **overrides)
    stream = await create_app_and_stream(box)
    write_hls_tree(box, stream["id"])
    return box, stream


def front_door(box) -> front.FrontDoor:
    door = box.client.server.front_site.door
    assert door is not None
    return door


async def test_front_pipelined_mix_in_order(aiohttp_client, tmp_path):
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    segment = f"/hls/{stream['id']}/source/seg-1.m4s"
    reader, writer = await connect(box)
    writer.write(get(segment) + get("/healthz") + get(segment))
    first = await read_response(reader)
    health = await read_response(reader)
    last = await read_response(reader)
    assert (first[0], first[2]) == (200, SEGMENT_BYTES)
    assert health[0] == 200
    assert b"ok" in health[2]
    # After /healthz the connection is aiohttp's, which serves the same bytes.
    assert (last[0], last[2]) == (200, SEGMENT_BYTES)
    assert first[1]["etag"] == last[1]["etag"]
    assert first[1]["content-type"] == last[1]["content-type"] == "video/iso.segment"
    writer.close()


async def test_front_changed_headers_parsed_again(aiohttp_client, tmp_path):
    # The front door keeps the last request's parsed headers and query. A
    # request that changes either gets its own, also on one connection.
    box, stream = await box_with_tree(
        aiohttp_client,
        tmp_path,
        hls_cors_origins="https://a.example, https://b.example",
    )
    playlist = f"/hls/{stream['id']}/source/index.m3u8"

    reader, writer = await connect(box)
    writer.write(
        get(playlist, "Origin: https://a.example")
        + get(playlist, "Origin: https://a.example")
        + get(playlist, "Origin: https://b.example")
        + get(playlist + "?_HLS_skip=junk", "Origin: https://b.example")
        + get(playlist, "Origin: https://b.example")
        + get(playlist, "Origin: https://c.example")
    )
    responses = [await read_response(reader) for _ in range(6)]

    assert [status for status, _, _ in responses] == [200, 200, 200, 400, 200, 200]
    origins = [
        headers.get("access-control-allow-origin") for _, headers, _ in responses
    ]
    assert origins == [
        "https://a.example",
        "https://a.example",
        "https://b.example",
        "https://b.example",
        "https://b.example",
        None,
    ]
    assert b"_HLS_skip" in responses[3][2]
    # No header needed aiohttp, so the front door served all six.
    assert len(front_door(box).connections) == 1
    writer.close()


async def test_front_many_pipelined_requests(aiohttp_client, tmp_path):
    # More than MAX_READ_AHEAD bytes of requests arrive while the first is
    # served, so reading pauses and resumes. Every request gets its response.
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    request = get(f"/hls/{stream['id']}/source/seg-2.m4s")
    count = front.MAX_READ_AHEAD // len(request) * 3
    reader, writer = await connect(box)
    writer.write(request * count)
    for _ in range(count):
        status, _, body = await read_response(reader)
        assert (status, body) == (200, SEGMENT_BYTES[::-1])
    assert len(front_door(box).connections) == 1
    writer.close()


async def test_front_errors_match_aiohttp(aiohttp_client, tmp_path):
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    reader, writer = await connect(box)
    for path in (
        "/hls/stream_none/index.m3u8",
        f"/hls/{stream['id']}/source/seg-9.m4s",
        f"/hls/{stream['id']}/source/index.m3u8?_HLS_msn=x",
    ):
        # The same request with Connection: close goes through aiohttp.
        writer.write(get(path, "Origin: https://a.example"))
        served = await read_response(reader)
        other_reader, other_writer = await connect(box)
        other_writer.write(get(path, "Origin: https://a.example", "Connection: close"))
        expected = await read_response(other_reader)
        other_writer.close()
        assert served[0] in (400, 404), path
        assert served[0] == expected[0], path
        assert served[2] == expected[2], path
        for name in ("content-type", "access-control-allow-origin"):
            assert served[1][name] == expected[1][name], (path, name)
    writer.close()


async def test_front_head_and_range_to_aiohttp(aiohttp_client, tmp_path):
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    segment = f"/hls/{stream['id']}/source/seg-1.m4s"
    reader, writer = await connect(box)
    writer.write(f"HEAD {segment} HTTP/1.1\r\nHost: box\r\n\r\n".encode())
    status_line = await reader.readline()
    assert b" 200 " in status_line
    head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    assert f"content-length: {len(SEGMENT_BYTES)}" in head
    writer.write(get(segment, "Range: bytes=0-9"))
    status, _, body = await read_response(reader)
    assert (status, body) == (206, SEGMENT_BYTES[:10])
    writer.close()


async def test_front_half_close_ends_connection(aiohttp_client, tmp_path):
    # As with aiohttp, a client that half-closes gets no more responses.
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    reader, writer = await connect(box)
    writer.write(get(f"/hls/{stream['id']}/source/seg-1.m4s"))
    assert (await read_response(reader))[0] == 200
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert not front_door(box).connections
    writer.close()


async def test_front_unread_responses_bound_buffer(aiohttp_client, tmp_path):
    # A client that sends requests and never reads the responses: the box
    # stops reading once MAX_READ_AHEAD bytes wait, plus one read at most.
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    request = get(f"/hls/{stream['id']}/source/init-0.mp4")
    _, writer = await connect(box)
    writer.write(request * (4 * 1024 * 1024 // len(request)))
    await asyncio.sleep(1.0)
    (connection,) = front_door(box).connections
    waiting = len(connection._buffer) - connection._start
    assert waiting <= front.MAX_READ_AHEAD + 256 * 1024
    assert connection._reading_paused
    writer.transport.abort()


@pytest.mark.parametrize(
    "head",
    [
        b"GET /hls/stream_x/index.m3u8 HTTP/1.1\nHost: box\n\n",
        b"GET /api/nothing HTTP/1.1\r\nHost: box\n\n",
        b"GET /hls/stream_x/index.m3u8 HTTP/1.1\rHost: box\r\r",
    ],
)
async def test_front_bare_line_ends_get_400(aiohttp_client, tmp_path, head):
    box = await start_box(aiohttp_client, tmp_path)
    reader, writer = await connect(box)
    writer.write(head)
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert int(status_line.split()[1]) == 400
    writer.close()


@pytest.mark.parametrize(
    "extra",
    [("Host: other",), ("User-Agent: a", "User-Agent: b"), ("X-Value: a\x01b",)],
)
async def test_front_heads_aiohttp_rejects_400(aiohttp_client, tmp_path, extra):
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    reader, writer = await connect(box)
    writer.write(get(f"/hls/{stream['id']}/source/seg-1.m4s", *extra))
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert int(status_line.split()[1]) == 400
    writer.close()


async def test_front_oversized_head_gets_400(aiohttp_client, tmp_path):
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    reader, writer = await connect(box)
    writer.write(get(f"/hls/{stream['id']}/index.m3u8", "X-Big: " + "a" * 9000))
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert int(status_line.split()[1]) in (400, 431)
    writer.close()


async def test_front_client_leaves_mid_segment(aiohttp_client, tmp_path):
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    content = os.urandom(24 * 1024 * 1024)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)
    door = front_door(box)
    for _ in range(3):
        reader, writer = await connect(box)
        writer.write(get(f"/hls/{stream['id']}/source/seg-3.m4s"))
        await reader.readline()
        writer.transport.abort()
    for _ in range(100):
        if not door.connections:
            break
        await asyncio.sleep(0.05)
    assert not door.connections
    response = await box.client.get(f"/hls/{stream['id']}/source/seg-1.m4s")
    assert await response.read() == SEGMENT_BYTES


def record_segment_sends(monkeypatch) -> tuple[list, list]:
    """Record the routes' sends with MSG_MORE and the cork at each sendfile call.

    Returns (sends, corks): (bytes given, bytes taken) of each ``send_with_more``
    call, and TCP_CORK's value during each direct sendfile call.
    """
    sends, corks = [], []
    real_send, real_sendfile = routes.send_with_more, routes.sendfile_now

    def sending(transport, data):
        count = real_send(transport, data)
        sends.append((len(data), count))
        return count

    def sendfile(transport, file, size):
        sock = transport.get_extra_info("socket")
        corks.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK))
        return real_sendfile(transport, file, size)

    monkeypatch.setattr(routes, "send_with_more", sending)
    monkeypatch.setattr(routes, "sendfile_now", sendfile)
    return sends, corks


async def test_front_segment_head_sent_with_more(aiohttp_client, tmp_path, monkeypatch):
    # The front door hands the headers of a large segment to the socket with
    # MSG_MORE, and the sendfile call after them releases them, without the
    # cork's system calls. Neither response on the connection is held back.
    sends, corks = record_segment_sends(monkeypatch)
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    content = os.urandom(300 * 1024)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)
    reader, writer = await connect(box)
    for _ in range(2):
        writer.write(get(f"/hls/{stream['id']}/source/seg-3.m4s"))
        status, _, body = await asyncio.wait_for(read_response(reader), 10)
        assert (status, body) == (200, content)
    writer.write(get(f"/hls/{stream['id']}/source/index.m3u8"))
    status, _, _ = await asyncio.wait_for(read_response(reader), 10)
    assert status == 200
    writer.close()

    assert len(sends) == 2
    for given, taken in sends:
        assert given > 0
        assert taken == given
    assert corks == [0, 0]


async def test_front_segment_corked_without_raw_socket(
    aiohttp_client, tmp_path, monkeypatch
):
    # Where asyncio's socket wrapper no longer exposes the socket it wraps,
    # the headers go through the transport, with the socket corked.
    sends, corks = record_segment_sends(monkeypatch)
    monkeypatch.setattr(routes, "raw_socket", lambda transport: None)
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    content = os.urandom(300 * 1024)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)
    reader, writer = await connect(box)
    writer.write(get(f"/hls/{stream['id']}/source/seg-3.m4s"))
    status, _, body = await asyncio.wait_for(read_response(reader), 10)
    assert (status, body) == (200, content)
    writer.close()
    ((given, taken),) = sends
    assert given > 0
    assert taken == 0
    assert corks == [1]


@pytest.mark.parametrize(("misses", "status"), [(1, 200), (2, 503)])
async def test_front_changed_file_looked_up_again(
    aiohttp_client, tmp_path, monkeypatch, misses, status
):
    # serve_hls returns a FileResponse when the file changed between its
    # lookup and its open. The front door then looks once more, and
    # responds 503 only if the file changed again.
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    segment = f"/hls/{stream['id']}/source/seg-1.m4s"
    original = routes._whole_file_response
    calls = []

    def changing(*args, **kwargs):
        calls.append(args[1])
        return None if len(calls) <= misses else original(*args, **kwargs)

    monkeypatch.setattr(routes, "_whole_file_response", changing)
    reader, writer = await connect(box)
    writer.write(get(segment))
    first = await read_response(reader)
    writer.write(get(segment))
    second = await read_response(reader)

    # Two lookups for the first request, one for the second.
    assert len(calls) == 3
    assert first[0] == status
    if status == 200:
        assert first[2] == SEGMENT_BYTES
    else:
        assert b"the file changed while it was read" in first[2]
        assert first[1]["content-type"].startswith("application/json")
    # /metrics counts the status that was sent.
    text = await (await box.client.get("/metrics")).text()
    unavailable = 'realcast_hls_requests_total{kind="segment",status="503"}'
    if status == 503:
        assert f"{unavailable} 1.0" in text
    else:
        assert unavailable not in text
    # The connection stays open, and the next request gets the file.
    assert (second[0], second[2]) == (200, SEGMENT_BYTES)
    writer.close()


async def test_front_vanished_file_gets_404(aiohttp_client, tmp_path, monkeypatch):
    # A segment that leaves the window between its lookup and its open: the
    # second lookup finds no file.
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    segment = box.hub.hls_root / stream["id"] / "source" / "seg-1.m4s"

    def vanishing(*args, **kwargs):
        segment.unlink()
        return None

    monkeypatch.setattr(routes, "_whole_file_response", vanishing)
    reader, writer = await connect(box)
    writer.write(get(f"/hls/{stream['id']}/source/seg-1.m4s"))
    status, headers, body = await read_response(reader)

    assert status == 404
    assert b"HLS resource not found: source/seg-1.m4s" in body
    assert headers["access-control-allow-origin"] == "*"
    writer.close()


async def test_front_idle_connections_closed(aiohttp_client, tmp_path, monkeypatch):
    monkeypatch.setattr(front, "KEEPALIVE_SECONDS", 0.3)
    monkeypatch.setattr(front, "SWEEP_SECONDS", 0.1)
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    reader, writer = await connect(box)
    writer.write(get(f"/hls/{stream['id']}/source/seg-1.m4s"))
    assert (await read_response(reader))[0] == 200
    # A connection that never finishes its head is closed the same way.
    partial_reader, partial_writer = await connect(box)
    partial_writer.write(b"GET /hls/")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert await asyncio.wait_for(partial_reader.read(), 5) == b""
    writer.close()
    partial_writer.close()


async def test_front_stop_closes_connections(aiohttp_client, tmp_path):
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    reader, writer = await connect(box)
    writer.write(get(f"/hls/{stream['id']}/source/seg-1.m4s"))
    assert (await read_response(reader))[0] == 200
    await box.client.server.front_site.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert not front_door(box).connections
    writer.close()


async def test_front_stop_finishes_responses(aiohttp_client, tmp_path):
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    content = os.urandom(24 * 1024 * 1024)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)
    reader, writer = await connect(box)
    writer.write(get(f"/hls/{stream['id']}/source/seg-3.m4s"))
    await reader.readline()
    # The segment does not fit in the socket buffers, so it is still being
    # sent when the site stops, and stopping waits for it.
    stopping = asyncio.create_task(box.client.server.front_site.stop())
    await reader.readuntil(b"\r\n\r\n")
    assert await reader.readexactly(len(content)) == content
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await asyncio.wait_for(stopping, 5)
    writer.close()


async def test_front_requests_counted(aiohttp_client, tmp_path):
    box, stream = await box_with_tree(aiohttp_client, tmp_path)
    reader, writer = await connect(box)
    for path in ("source/seg-1.m4s", "source/seg-2.m4s", "source/missing.m4s"):
        writer.write(get(f"/hls/{stream['id']}/{path}"))
        await read_response(reader)
    writer.close()
    text = await (await box.client.get("/metrics")).text()
    counts = {
        (sample.labels["kind"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "realcast_hls_requests"
        for sample in family.samples
        if sample.name == "realcast_hls_requests_total"
    }
    assert counts[("segment", "200")] == 2
    assert counts[("segment", "404")] == 1
    sent = {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "realcast_hls_response_bytes"
        for sample in family.samples
        if sample.name == "realcast_hls_response_bytes_total"
    }
    assert sent["segment"] >= 2 * len(SEGMENT_BYTES)
