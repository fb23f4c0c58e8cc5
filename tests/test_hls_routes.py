"""HLS file serving: MIME types, cache headers, ranges and path confinement."""

from __future__ import annotations

import pytest

from realcast_box.hls.routes import resolve_hls_path
from tests.box import start_box

PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:7\n"


@pytest.fixture
def hls_tree(tmp_path):
    root = tmp_path / "hls"
    rendition = root / "stream_abc" / "source"
    rendition.mkdir(parents=True)
    (root / "stream_abc" / "index.m3u8").write_text(PLAYLIST)
    (rendition / "index.m3u8").write_text(PLAYLIST)
    (rendition / "init-0.mp4").write_bytes(b"\x00" * 64)
    (rendition / "seg-1.m4s").write_bytes(bytes(range(256)))
    (root / "stream_other").mkdir()
    (root / "stream_other" / "index.m3u8").write_text(PLAYLIST)
    (root / "secret.m3u8").write_text("private")
    (rendition / "notes.txt").write_text("not media")
    return root


@pytest.mark.parametrize(
    "relative",
    [
        "../secret.m3u8",
        "../stream_other/index.m3u8",
        "source/../../secret.m3u8",
        "/etc/passwd.m3u8",
        "source/notes.txt",
        "source/missing.m4s",
        "source",
    ],
)
def test_hls_resolve_rejects_outside_or_non_media(hls_tree, relative):
    assert resolve_hls_path(hls_tree, "stream_abc", relative) is None


def test_hls_resolve_rejects_bad_stream_id(hls_tree):
    assert resolve_hls_path(hls_tree, "..", "secret.m3u8") is None


def test_hls_resolve_rejects_symlink_out(hls_tree):
    (hls_tree / "stream_abc" / "link.m3u8").symlink_to(hls_tree / "secret.m3u8")
    assert resolve_hls_path(hls_tree, "stream_abc", "link.m3u8") is None


def test_hls_resolve_accepts_media(hls_tree):
    path = resolve_hls_path(hls_tree, "stream_abc", "source/seg-1.m4s")
    assert path == (hls_tree / "stream_abc" / "source" / "seg-1.m4s").resolve()


async def test_hls_routes_headers_and_ranges(aiohttp_client, tmp_path, hls_tree):
    box = await start_box(aiohttp_client, tmp_path)
    hls_root = box.hub.hls_root
    hls_root.rmdir()
    hls_tree.rename(hls_root)

    response = await box.client.get("/hls/stream_abc/index.m3u8")
    assert response.status == 200
    assert response.content_type == "application/vnd.apple.mpegurl"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Access-Control-Allow-Origin"] == "*"

    response = await box.client.get("/hls/stream_abc/source/seg-1.m4s")
    assert response.status == 200
    assert response.content_type == "video/iso.segment"
    assert "immutable" in response.headers["Cache-Control"]

    response = await box.client.get("/hls/stream_abc/source/init-0.mp4")
    assert response.content_type == "video/mp4"

    response = await box.client.get(
        "/hls/stream_abc/source/seg-1.m4s", headers={"Range": "bytes=10-19"}
    )
    assert response.status == 206
    assert await response.read() == bytes(range(10, 20))

    response = await box.client.get("/hls/stream_abc/%2e%2e/secret.m3u8")
    assert response.status == 404
    body = await response.json()
    assert body["status_code"] == 404

    response = await box.client.get("/hls/stream_abc/source/notes.txt")
    assert response.status == 404
