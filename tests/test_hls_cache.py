"""Caches on the /hls request path: playback access, file contents, path lookup.

Each cache must serve what the uncached path would: a deleted stream, a
stream that became signed and a replaced or deleted file are seen on the
next request.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from types import SimpleNamespace

import aiohttp
import pytest

from realcast_box.hls import routes as hls_routes
from realcast_box.hls.access import PlaybackAccessCache, StreamAccess
from realcast_box.hls.filecache import HlsFileCache
from realcast_box.hls.playback import add_query_to_uris
from realcast_box.hls.routes import HLS_FILES, locate_hls_file, resolve_hls_path
from realcast_box.store.db import Database
from tests.box import start_box
from tests.hls_helpers import (
    SEGMENT_BYTES,
    create_app_and_stream,
    issue_token,
    write_hls_tree,
)

MEDIA = (
    "#EXTM3U\r\n"
    "#EXT-X-TARGETDURATION:2\n"
    '#EXT-X-MAP:URI="init-0.mp4"\n'
    "#EXTINF:2.000,\n"
    "seg-1.m4s?x=1\n"
    "#EXTINF:2.000,\n"
    "https://cdn.example.com/seg-2.m4s\n"
)


# --- Playback access ----------------------------------------------------------


async def public_stream(box) -> dict:
    stream = await create_app_and_stream(box)
    write_hls_tree(box, stream["id"])
    return stream


async def test_hls_cache_deleted_stream_404(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await public_stream(box)
    path = f"/hls/{stream['id']}/source/index.m3u8"
    assert (await box.client.get(path)).status == 200

    response = await box.client.delete(f"/api/streams/{stream['id']}", headers=box.auth)
    assert response.status == 204
    response = await box.client.get(path)
    body = await response.json()
    assert response.status == 404
    assert body["detail"] == f"stream not found: {stream['id']}"


async def test_hls_cache_stream_made_signed_401(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await public_stream(box)
    path = f"/hls/{stream['id']}/index.m3u8"
    assert (await box.client.get(path)).status == 200

    response = await box.client.put(
        f"/api/streams/{stream['id']}",
        json={"settings": {"playback_policy": "signed"}},
        headers=box.auth,
    )
    assert response.status == 200, await response.text()
    assert (await box.client.get(path)).status == 401
    token = (await issue_token(box, stream["id"]))["playback_token"]
    assert (await box.client.get(f"{path}?token={token}")).status == 200


async def test_hls_cache_app_made_signed_401(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await public_stream(box)
    path = f"/hls/{stream['id']}/index.m3u8"
    assert (await box.client.get(path)).status == 200

    response = await box.client.put(
        f"/api/apps/{stream['app_id']}",
        json={"settings": {"playback_policy": "signed"}},
        headers=box.auth,
    )
    assert response.status == 200, await response.text()
    assert (await box.client.get(path)).status == 401


async def open_database(tmp_path) -> tuple[Database, str]:
    """Open a migrated database with one public stream; return it and the stream id."""
    database = await Database.open(tmp_path / "realcast.db")
    await database.execute(
        "INSERT INTO users"
        " (id, email, email_key, password_hash, full_name, created_at)"
        " VALUES ('user_1', 'a@example.com', 'a@example.com', 'x', 'A',"
        " '2030-01-01T00:00:00Z')"
    )
    await database.execute(
        "INSERT INTO apps (id, user_id, name, description, settings, created_at)"
        " VALUES ('app_1', 'user_1', 'App', '', '{}', '2030-01-01T00:00:00Z')"
    )
    await database.execute(
        "INSERT INTO streams"
        " (id, app_id, title, description, stream_key, settings, created_at)"
        " VALUES ('stream_1', 'app_1', 'Show', '', 'key', '{}',"
        " '2030-01-01T00:00:00Z')"
    )
    return database, "stream_1"


async def test_hls_cache_access_follows_own_writes(tmp_path):
    database, stream_id = await open_database(tmp_path)
    try:
        cache = PlaybackAccessCache(clock=lambda: 0.0)
        assert await cache.get(database, stream_id) == StreamAccess("public", 0)
        await database.execute(
            "UPDATE streams SET settings = ? WHERE id = ?",
            ('{"playback_policy": "signed"}', stream_id),
        )
        assert await cache.get(database, stream_id) == StreamAccess("signed", 0)
        await database.execute(
            "INSERT INTO playback_revocations (stream_id, generation, revoked_at)"
            " VALUES (?, 1, '2030-01-01T00:00:00Z')",
            (stream_id,),
        )
        assert await cache.get(database, stream_id) == StreamAccess("signed", 1)
        await database.execute("DELETE FROM streams WHERE id = ?", (stream_id,))
        assert await cache.get(database, stream_id) is None
    finally:
        await database.close()


async def test_hls_cache_access_expires_other_writers(tmp_path):
    database, stream_id = await open_database(tmp_path)
    now = [0.0]
    try:
        cache = PlaybackAccessCache(max_age=1.0, clock=lambda: now[0])
        assert await cache.get(database, stream_id) == StreamAccess("public", 0)
        # Another process writes: this connection's total_changes stays.
        with sqlite3.connect(tmp_path / "realcast.db") as other:
            other.execute(
                "UPDATE streams SET settings = ? WHERE id = ?",
                ('{"playback_policy": "signed"}', stream_id),
            )
        other.close()
        now[0] = 0.5
        assert await cache.get(database, stream_id) == StreamAccess("public", 0)
        now[0] = 1.0
        assert await cache.get(database, stream_id) == StreamAccess("signed", 0)
    finally:
        await database.close()


async def test_hls_cache_access_bounded(tmp_path):
    database, stream_id = await open_database(tmp_path)
    try:
        cache = PlaybackAccessCache(max_entries=2)
        for missing in ("stream_a", "stream_b", "stream_c"):
            assert await cache.get(database, missing) is None
        assert await cache.get(database, stream_id) == StreamAccess("public", 0)
        assert len(cache._entries) == 1
    finally:
        await database.close()


# --- File contents ------------------------------------------------------------


def test_hls_cache_playlist_matches_rewrite(tmp_path):
    path = tmp_path / "index.m3u8"
    path.write_bytes(MEDIA.encode())
    cache = HlsFileCache()
    expected = add_query_to_uris(MEDIA.replace("\r\n", "\n"), "session", "SIG")
    for _ in range(2):
        body = cache.playlist(str(path), os.stat(path), "session", "SIG")
        assert body == expected.encode()
    other = cache.playlist(str(path), os.stat(path), "session", "OTHER")
    assert other == expected.replace("SIG", "OTHER").encode()
    plain = cache.playlist(str(path), os.stat(path), "session", None)
    assert plain == MEDIA.replace("\r\n", "\n").encode()


def test_hls_cache_replaced_playlist_reread(tmp_path):
    path = tmp_path / "index.m3u8"
    path.write_text("#EXTM3U\nseg-1.m4s\n")
    cache = HlsFileCache()
    first = cache.playlist(str(path), os.stat(path), "session", "S")
    assert first == b"#EXTM3U\nseg-1.m4s?session=S\n"
    # The packager renames a new file over the playlist.
    new = tmp_path / "index.m3u8.tmp"
    new.write_text("#EXTM3U\nseg-1.m4s\nseg-2.m4s\n")
    new.replace(path)
    second = cache.playlist(str(path), os.stat(path), "session", "S")
    assert second == b"#EXTM3U\nseg-1.m4s?session=S\nseg-2.m4s?session=S\n"


def test_hls_cache_files_bounded(tmp_path):
    cache = HlsFileCache(max_bytes=250, max_file_bytes=100)
    for index in range(5):
        path = tmp_path / f"seg-{index}.m4s"
        path.write_bytes(bytes([index]) * 100)
        assert cache.read(str(path), os.stat(path)) == bytes([index]) * 100
    assert cache.size == 200
    large = tmp_path / "large.m4s"
    large.write_bytes(b"x" * 101)
    assert cache.read(str(large), os.stat(large)) is None


def test_hls_cache_changed_file_not_kept(tmp_path):
    path = tmp_path / "seg-1.m4s"
    path.write_bytes(b"a" * 10)
    stale = os.stat(path)
    path.unlink()
    path.write_bytes(b"b" * 20)
    cache = HlsFileCache()
    assert cache.read(str(path), stale) is None
    assert cache.size == 0


@pytest.mark.parametrize(
    ("size", "max_file_bytes"),
    [(1024, None), (300 * 1024, None), (300 * 1024, 64 * 1024)],
)
async def test_hls_cache_segment_matches_file_response(
    aiohttp_client, tmp_path, size, max_file_bytes
):
    box = await start_box(aiohttp_client, tmp_path)
    if max_file_bytes is not None:
        box.app[HLS_FILES].max_file_bytes = max_file_bytes
    stream = await public_stream(box)
    content = bytes(range(256)) * (size // 256)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)
    path = f"/hls/{stream['id']}/source/seg-3.m4s"
    sent = await box.client.get(path)
    # A precondition that is met sends the same file through FileResponse.
    from_disk = await box.client.get(
        path, headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}
    )
    assert sent.status == 200
    assert from_disk.status == 200
    assert await sent.read() == content
    assert await from_disk.read() == content
    for name in (
        "Content-Type",
        "Content-Length",
        "ETag",
        "Last-Modified",
        "Accept-Ranges",
        "Cache-Control",
        "Access-Control-Allow-Origin",
    ):
        assert sent.headers.get(name) == from_disk.headers.get(name), name


def record_sendfile_now(monkeypatch, before=None) -> list[tuple[int, int]]:
    """Record (bytes sent, size) of each direct sendfile call of the routes."""
    calls = []
    real = hls_routes.sendfile_now

    def recording(transport, file, size):
        if before is not None:
            before(file, size)
        sent = real(transport, file, size)
        calls.append((sent, size))
        return sent

    monkeypatch.setattr(hls_routes, "sendfile_now", recording)
    return calls


@pytest.mark.parametrize("front_door", [True, False])
async def test_hls_cache_large_segment_sendfile(
    aiohttp_client, tmp_path, monkeypatch, front_door
):
    calls = record_sendfile_now(monkeypatch)
    box = await start_box(aiohttp_client, tmp_path, front_door=front_door)
    stream = await public_stream(box)
    content = os.urandom(300 * 1024)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)
    cached = box.app[HLS_FILES].size

    response = await box.client.get(f"/hls/{stream['id']}/source/seg-3.m4s")
    assert response.status == 200
    assert await response.read() == content
    # One direct call sent it all, and the cache did not keep a copy.
    assert calls == [(len(content), len(content))]
    assert box.app[HLS_FILES].size == cached

    small = await box.client.get(f"/hls/{stream['id']}/source/seg-1.m4s")
    assert await small.read() == SEGMENT_BYTES
    assert len(calls) == 1


@pytest.mark.parametrize("front_door", [True, False])
async def test_hls_cache_segment_sendfile_rest(
    aiohttp_client, tmp_path, monkeypatch, front_door
):
    # Larger than loopback's socket buffers take at once, so the direct call
    # leaves a rest that the event loop's sendfile sends when there is room.
    calls = record_sendfile_now(monkeypatch)
    box = await start_box(aiohttp_client, tmp_path, front_door=front_door)
    stream = await public_stream(box)
    content = os.urandom(24 * 1024 * 1024)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)

    response = await box.client.get(f"/hls/{stream['id']}/source/seg-3.m4s")
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(content))
    assert await response.read() == content
    ((sent, size),) = calls
    assert 0 < sent < size == len(content)

    again = await box.client.get(f"/hls/{stream['id']}/source/seg-1.m4s")
    assert await again.read() == SEGMENT_BYTES


@pytest.mark.parametrize("front_door", [True, False])
async def test_hls_cache_segment_shrinks_closes(
    aiohttp_client, tmp_path, monkeypatch, front_door
):
    def truncate(file, size):
        os.truncate(file.name, size // 2)

    calls = record_sendfile_now(monkeypatch, before=truncate)
    box = await start_box(aiohttp_client, tmp_path, front_door=front_door)
    stream = await public_stream(box)
    content = os.urandom(300 * 1024)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)

    response = await box.client.get(f"/hls/{stream['id']}/source/seg-3.m4s")
    assert response.status == 200
    # The file now contains fewer bytes than Content-Length, so the box
    # closes the connection and the client sees a cut-off body.
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert calls == [(len(content) // 2, len(content))]
    again = await box.client.get(f"/hls/{stream['id']}/source/seg-1.m4s")
    assert await again.read() == SEGMENT_BYTES


async def test_hls_cache_deleted_segment_404(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await public_stream(box)
    path = f"/hls/{stream['id']}/source/seg-1.m4s"
    assert (await box.client.get(path)).status == 200
    (box.hub.hls_root / stream["id"] / "source" / "seg-1.m4s").unlink()
    assert (await box.client.get(path)).status == 404


async def test_hls_cache_segment_range_206(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await public_stream(box)
    path = f"/hls/{stream['id']}/source/seg-1.m4s"
    assert (await box.client.get(path)).status == 200
    response = await box.client.get(path, headers={"Range": "bytes=0-9"})
    assert response.status == 206
    assert await response.read() == SEGMENT_BYTES[:10]


# --- Path lookup --------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "hls"
    rendition = root / "stream_abc" / "source"
    rendition.mkdir(parents=True)
    (rendition / "index.m3u8").write_text("#EXTM3U\n")
    (rendition / "seg-1.m4s").write_bytes(b"segment")
    (root / "secret.m3u8").write_text("private")
    return root


@pytest.mark.parametrize(
    "relative",
    [
        "source/index.m3u8",
        "source/seg-1.m4s",
        "../secret.m3u8",
        "source/../../secret.m3u8",
        "./source/index.m3u8",
        "/etc/passwd.m3u8",
        "source/missing.m4s",
        "source",
        "source//index.m3u8",
    ],
)
def test_hls_cache_locate_matches_resolve(tree, relative):
    located = locate_hls_file(tree, "stream_abc", relative)
    resolved = resolve_hls_path(tree, "stream_abc", relative)
    assert (located is None) == (resolved is None)
    if located is not None:
        assert os.path.samefile(located[0], resolved)


def test_hls_cache_locate_symlinks(tree):
    folder = tree / "stream_abc"
    (folder / "out.m3u8").symlink_to(tree / "secret.m3u8")
    (folder / "inside.m3u8").symlink_to(folder / "source" / "index.m3u8")
    (folder / "linked").symlink_to(tree)
    assert locate_hls_file(tree, "stream_abc", "out.m3u8") is None
    assert locate_hls_file(tree, "stream_abc", "linked/secret.m3u8") is None
    inside = locate_hls_file(tree, "stream_abc", "inside.m3u8")
    assert inside is not None
    assert os.path.samefile(inside[0], folder / "source" / "index.m3u8")


async def test_hls_cache_client_leaves_mid_send(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await public_stream(box)
    content = os.urandom(24 * 1024 * 1024)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)
    path = f"/hls/{stream['id']}/source/seg-3.m4s"
    open_files = len(os.listdir("/proc/self/fd"))

    for _ in range(3):
        async with aiohttp.ClientSession() as session:
            async with session.get(box.client.make_url(path)) as response:
                assert response.status == 200
                await response.content.readexactly(1024 * 1024)
        # Leaving the session closes the connection with most of it unsent.
    again = await box.client.get(path)
    assert await again.read() == content
    await asyncio.sleep(0.2)
    # Each response closed its file, sent or not.
    assert len(os.listdir("/proc/self/fd")) <= open_files + 2


async def test_hls_cache_segment_corked_while_sent(
    aiohttp_client, tmp_path, monkeypatch
):
    # Through aiohttp, the headers and the start of the body leave together:
    # the socket is corked during the direct sendfile call, and uncorked
    # after it. (The front door sends the headers with MSG_MORE instead:
    # tests/test_hls_front.py.)
    seen = []
    real = hls_routes.sendfile_now

    def checking(transport, file, size):
        sock = transport.get_extra_info("socket")
        seen.append((sock, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)))
        return real(transport, file, size)

    monkeypatch.setattr(hls_routes, "sendfile_now", checking)
    box = await start_box(aiohttp_client, tmp_path, front_door=False)
    stream = await public_stream(box)
    content = os.urandom(300 * 1024)
    (box.hub.hls_root / stream["id"] / "source" / "seg-3.m4s").write_bytes(content)

    response = await box.client.get(f"/hls/{stream['id']}/source/seg-3.m4s")
    assert await response.read() == content
    ((sock, corked),) = seen
    assert corked == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    # The next response on the same connection is not held back.
    playlist = await box.client.get(f"/hls/{stream['id']}/source/index.m3u8")
    assert playlist.status == 200


def test_hls_cache_rewritten_file_not_kept(tmp_path):
    # A file rewritten in place keeps its inode, as a replacement may get
    # the inode of the file it replaced. The cache then keeps nothing.
    path = tmp_path / "init-0.mp4"
    path.write_bytes(b"a" * 10)
    stale = os.stat(path)
    path.write_bytes(b"b" * 10)
    os.utime(path, ns=(stale.st_atime_ns, stale.st_mtime_ns + 1_000_000))
    cache = HlsFileCache()

    assert os.stat(path).st_ino == stale.st_ino
    assert cache.read(str(path), stale) is None
    assert cache.size == 0


def test_hls_cache_rewritten_segment_not_sent(tmp_path, monkeypatch):
    # The same for a segment sent with sendfile: a response would pair the
    # old size and ETag with the new bytes.
    path = tmp_path / "seg-1.m4s"
    path.write_bytes(b"a" * 2 * hls_routes.SENDFILE_MIN_BYTES)
    stale = os.stat(path)
    path.write_bytes(b"b" * hls_routes.SENDFILE_MIN_BYTES)
    request = SimpleNamespace(app={HLS_FILES: HlsFileCache()}, transport=None)
    monkeypatch.setattr(hls_routes, "_plain_socket", lambda transport: True)

    assert os.stat(path).st_ino == stale.st_ino
    assert hls_routes._whole_file_response(request, str(path), stale, {}) is None
