"""HLS file serving: MIME types, cache headers, ranges and path confinement."""

from __future__ import annotations

import pytest

from realcast_box.errors import StartupError
from realcast_box.hls.cors import parse_cors_origins
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


async def box_with_tree(aiohttp_client, tmp_path, hls_tree, **settings):
    """Start a box whose one public stream serves the files of ``hls_tree``."""
    box = await start_box(aiohttp_client, tmp_path, **settings)
    stream = await box.create_stream()
    (hls_tree / "stream_abc").rename(box.hub.hls_root / stream["id"])
    return box, f"/hls/{stream['id']}"


async def test_hls_routes_headers_and_ranges(aiohttp_client, tmp_path, hls_tree):
    box, prefix = await box_with_tree(aiohttp_client, tmp_path, hls_tree)

    response = await box.client.get(f"{prefix}/index.m3u8")
    assert response.status == 200
    assert response.content_type == "application/vnd.apple.mpegurl"
    assert response.headers["Cache-Control"] == "no-cache"
    assert "ETag" not in response.headers
    assert response.headers["Access-Control-Allow-Origin"] == "*"

    response = await box.client.get(f"{prefix}/source/index.m3u8")
    assert response.content_type == "application/vnd.apple.mpegurl"
    assert response.headers["Cache-Control"] == "no-cache"

    response = await box.client.get(f"{prefix}/source/seg-1.m4s")
    assert response.status == 200
    assert response.content_type == "video/iso.segment"
    assert response.headers["Cache-Control"] == "public, max-age=86400, immutable"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Access-Control-Allow-Origin"] == "*"

    response = await box.client.get(f"{prefix}/source/init-0.mp4")
    assert response.content_type == "video/mp4"
    assert "immutable" in response.headers["Cache-Control"]

    response = await box.client.get(
        f"{prefix}/source/seg-1.m4s", headers={"Range": "bytes=10-19"}
    )
    assert response.status == 206
    assert response.headers["Content-Range"] == "bytes 10-19/256"
    assert await response.read() == bytes(range(10, 20))

    response = await box.client.get(f"{prefix}/%2e%2e/secret.m3u8")
    assert response.status == 404
    body = await response.json()
    assert body["status_code"] == 404

    response = await box.client.get(f"{prefix}/source/notes.txt")
    assert response.status == 404


async def test_hls_routes_unknown_stream_404(aiohttp_client, tmp_path, hls_tree):
    box, _ = await box_with_tree(aiohttp_client, tmp_path, hls_tree)
    response = await box.client.get("/hls/stream_other/index.m3u8")
    body = await response.json()
    assert response.status == 404
    assert body["detail"] == "stream not found: stream_other"


async def test_hls_routes_segment_etag(aiohttp_client, tmp_path, hls_tree):
    box, prefix = await box_with_tree(aiohttp_client, tmp_path, hls_tree)
    response = await box.client.get(f"{prefix}/source/seg-1.m4s")
    etag = response.headers["ETag"]
    again = await box.client.get(
        f"{prefix}/source/seg-1.m4s", headers={"If-None-Match": etag}
    )
    assert again.status == 304
    assert again.headers["ETag"] == etag


async def test_hls_routes_large_segment_whole(aiohttp_client, tmp_path, hls_tree):
    # A segment the size of a real one comes whole from the in-memory copy,
    # with the same headers as a small one.
    box, prefix = await box_with_tree(aiohttp_client, tmp_path, hls_tree)
    folder = box.hub.hls_root / prefix.split("/")[2] / "source"
    body = bytes(range(256)) * 2000  # 512,000 bytes
    (folder / "seg-2.m4s").write_bytes(body)

    responses = [await box.client.get(f"{prefix}/source/seg-2.m4s") for _ in range(2)]
    head = await box.client.head(f"{prefix}/source/seg-2.m4s")

    for response in responses:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(body))
        assert response.content_type == "video/iso.segment"
        assert response.headers["Accept-Ranges"] == "bytes"
        assert "ETag" in response.headers
        assert "Last-Modified" in response.headers
        assert await response.read() == body
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(body))
    assert await head.read() == b""


async def test_hls_routes_head(aiohttp_client, tmp_path, hls_tree):
    box, prefix = await box_with_tree(aiohttp_client, tmp_path, hls_tree)
    segment = await box.client.head(f"{prefix}/source/seg-1.m4s")
    playlist = await box.client.head(f"{prefix}/index.m3u8")
    assert segment.status == 200
    assert segment.headers["Content-Length"] == "256"
    assert segment.content_type == "video/iso.segment"
    assert await segment.read() == b""
    assert playlist.status == 200
    assert playlist.content_type == "application/vnd.apple.mpegurl"


async def test_hls_routes_cors_allow_list(aiohttp_client, tmp_path, hls_tree):
    box, prefix = await box_with_tree(
        aiohttp_client,
        tmp_path,
        hls_tree,
        hls_cors_origins="https://player.example, http://10.0.0.5:3000",
    )
    allowed = await box.client.get(
        f"{prefix}/source/seg-1.m4s", headers={"Origin": "https://player.example"}
    )
    other = await box.client.get(
        f"{prefix}/source/seg-1.m4s", headers={"Origin": "https://evil.example"}
    )
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://player.example"
    assert allowed.headers["Vary"] == "Origin"
    assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
    # Browsers read these two only from a preflight response.
    assert "Access-Control-Allow-Methods" not in allowed.headers
    assert "Access-Control-Allow-Headers" not in allowed.headers
    assert "Access-Control-Allow-Origin" not in other.headers
    assert other.headers["Vary"] == "Origin"


async def test_hls_routes_preflight(aiohttp_client, tmp_path, hls_tree):
    box, prefix = await box_with_tree(
        aiohttp_client, tmp_path, hls_tree, hls_cors_origins="http://10.0.0.5:3000"
    )
    response = await box.client.options(
        f"{prefix}/source/seg-1.m4s",
        headers={
            "Origin": "http://10.0.0.5:3000",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "http://10.0.0.5:3000"
    assert "Range" in response.headers["Access-Control-Allow-Headers"]
    assert "HEAD" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Max-Age"] == "86400"


def test_hls_cors_origins_any():
    assert parse_cors_origins(" * ").origins is None


def test_hls_cors_origins_list():
    policy = parse_cors_origins("HTTPS://A.example/, http://b.example:8080")
    assert policy.origins == {"https://a.example", "http://b.example:8080"}


@pytest.mark.parametrize("value", ["", "a.example", "https://a.example/path", "*,x"])
def test_hls_cors_origins_invalid(value):
    with pytest.raises(StartupError, match="hls_cors_origins"):
        parse_cors_origins(value)
