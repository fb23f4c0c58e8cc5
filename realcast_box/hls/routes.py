"""HTTP routes that serve live HLS output from the data directory.

Only playlists (.m3u8), media segments (.m4s) and init segments (.mp4) below
a stream's own folder are served, to the viewers that hls/access.py lets
through. Playlists are rewritten per viewer: every relative URI gets the
viewer's playback session signature as its ``session`` query parameter. So
playlists are never cached: ``no-cache``, and no validators that would let
a cache serve one viewer's copy to another.

Segment names are unique per publishing session, so segments are immutable:
long-lived ``Cache-Control``, ``ETag``, range requests and HEAD. An HTTP
cache or CDN in front of /hls can keep them once if it leaves the
``session`` parameter out of its cache key.

With low-latency HLS, the media playlist and the parts of a rendition that
a live session is writing are served from the packager's memory
(hls/output.py). Everything else, and those once the session ended, comes
from disk.

Each request stats the file it serves. A whole segment of 64 KiB or more
on a plain TCP connection goes out with sendfile. On the plain HTTP port,
simple GETs reach ``serve_hls`` through the front door of hls/front.py,
which writes their responses without aiohttp's request stack. Smaller files, and files
on an HTTPS connection, come from an in-memory copy (hls/filecache.py) that
the stat keeps current, unless they are too large to keep. HEAD requests
and requests with a range or a precondition go to aiohttp's FileResponse.

Low-latency HLS (RFC 8216bis) adds two kinds of blocking request on a
rendition that a live session is writing. A media playlist request with
``_HLS_msn`` (and optionally ``_HLS_part``) waits until the playlist lists
that part, and a request for the part that EXT-X-PRELOAD-HINT names waits
until the part is written. Both wait on a future that the packager resolves,
so blocked requests cost nothing between parts.

A media playlist request with ``_HLS_skip=YES`` (or ``v2``) gets the playlist
delta update of RFC 8216bis when the playlist offers one (CAN-SKIP-UNTIL),
alone or after blocking. The delta and the whole playlist are cached and
signed under different keys, so neither is ever served in place of the other.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import math
import os
import re
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from realcast_box.api.errors import ApiError
from realcast_box.appkeys import CONFIG, HUB
from realcast_box.hls import playback
from realcast_box.hls.access import (
    ACCESS_CACHE,
    Grant,
    PlaybackAccessCache,
    Resource,
    authorize_hls,
    classify,
)
from realcast_box.hls.cors import CORS_MAX_AGE_SECONDS, HLS_CORS, parse_cors_origins
from realcast_box.hls.filecache import HlsFileCache, same_file
from realcast_box.hls.output import RenditionFiles
from realcast_box.hls.playlist import SkipRequest
from realcast_box.hls.viewers import VIEWERS, ViewerTracker, publishing_session_id

logger = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
}
PLAYLIST_CACHE_CONTROL = "no-cache"
SEGMENT_CACHE_CONTROL = "public, max-age=86400, immutable"
STREAM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Delivery directives (RFC 8216bis): blocking playlist reload, then the
# request for a playlist delta update.
MSN_DIRECTIVE = "_HLS_msn"
PART_DIRECTIVE = "_HLS_part"
SKIP_DIRECTIVE = "_HLS_skip"
# A decimal-integer of RFC 8216: at most 20 digits, up to 2**64 - 1.
DECIMAL_INTEGER_PATTERN = re.compile(r"^[0-9]{1,20}$")
PART_NAME_PATTERN = re.compile(r"^part-([0-9]{1,20})\.([0-9]{1,6})\.m4s$")
# A path component that is neither "." nor ".." nor hidden, in the names the
# packager gives its folders and files.
PLAIN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# Request headers that only FileResponse handles: ranges and preconditions.
FILE_RESPONSE_HEADERS = (
    "Range",
    "If-Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
)
HLS_FILES = web.AppKey("hls_files", HlsFileCache)
# Session signatures made for playlists, by stream and session. A viewer's
# renewed session changes once a second at most, so a viewer that reloads
# several times a second reuses one signature.
SIGNATURES = web.AppKey("hls_signatures", dict)
MAX_SIGNATURES = 4096
SENDFILE_FALLBACK_CHUNK = 256 * 1024
# Whole segments at least this large go out with sendfile on plain TCP.
SENDFILE_MIN_BYTES = 64 * 1024


def path_suffix(relative: str) -> str:
    """Return ``Path(relative).suffix``, without building a Path in the usual case."""
    name = relative.rpartition("/")[2]
    if name in ("", "."):
        return Path(relative).suffix
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def resolve_hls_path(root: Path, stream_id: str, relative: str) -> Path | None:
    """Return the file for ``relative`` inside ``root/stream_id``, or None.

    None covers a bad stream id, an extension that is not HLS, and any path
    that would leave the stream's folder (``..``, absolute paths, symlinks).
    """
    if not STREAM_ID_PATTERN.match(stream_id):
        return None
    if path_suffix(relative) not in CONTENT_TYPES or "\x00" in relative:
        return None
    base = (root / stream_id).resolve()
    candidate = (base / relative).resolve()
    if os.path.commonpath([base, candidate]) != str(base):
        return None
    if not candidate.is_file():
        return None
    return candidate


def locate_hls_file(
    root: Path, stream_id: str, relative: str
) -> tuple[str, os.stat_result] | None:
    """Return the path and stat of the file ``resolve_hls_path`` would return.

    The usual path, made of plain names with no symbolic link below the
    stream's folder, costs one lstat per component. Any other path goes
    through ``resolve_hls_path``.
    """
    if not STREAM_ID_PATTERN.match(stream_id):
        return None
    if path_suffix(relative) not in CONTENT_TYPES or "\x00" in relative:
        return None
    names = relative.split("/")
    if all(PLAIN_NAME_PATTERN.match(name) for name in names):
        # Plain names need no os.path.join, which costs more per request.
        path = f"{root}/{stream_id}"
        try:
            for name in names:
                path = f"{path}/{name}"
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    break
            else:
                return (path, info) if stat.S_ISREG(info.st_mode) else None
        except OSError:
            return None
    resolved = resolve_hls_path(root, stream_id, relative)
    if resolved is None:
        return None
    try:
        return str(resolved), os.stat(resolved)
    except OSError:
        return None


def _not_found(
    stream_id: str, relative: str, headers: dict[str, str]
) -> web.HTTPNotFound:
    if relative == "index.m3u8" and STREAM_ID_PATTERN.match(stream_id):
        text = (
            f"no HLS output for stream {stream_id}: it is not live, or its first"
            " media (a part with low-latency HLS, else a segment) is not written"
            " yet (retry in a few seconds)"
        )
    else:
        text = f"HLS resource not found: {relative}"
    return web.HTTPNotFound(text=text, headers=headers)


async def serve_hls(request: web.Request) -> web.StreamResponse:
    stream_id = request.match_info["stream_id"]
    relative = request.match_info["path"]
    cors = request.app[HLS_CORS].headers(request.headers.get("Origin"))
    if not STREAM_ID_PATTERN.match(stream_id):
        raise _not_found(stream_id, relative, cors)
    if path_suffix(relative) not in CONTENT_TYPES:
        raise _not_found(stream_id, relative, cors)

    resource = classify(relative)
    grant = await authorize_hls(request, stream_id, resource, cors)
    position = None
    skip = None
    if resource is Resource.MEDIA_PLAYLIST and request.app[CONFIG].hls_low_latency:
        # Checked before the rendition's state, so malformed directives get
        # a 400 also after the stream has ended. Without low-latency HLS
        # the playlists offer neither blocking reload nor delta updates,
        # and directives are ignored.
        position = parse_delivery_directives(request.query, cors)
        skip = parse_skip_directive(request.query, cors)
    live = _live_rendition(request, stream_id, relative)
    response = None
    if live is not None:
        waited = False
        if position is not None:
            waited = await _block_for_directives(request, live, position, cors)
        elif resource is Resource.SEGMENT:
            waited = await _wait_for_part_file(live, relative.rpartition("/")[2])
        if waited:
            # Access may have ended during the wait: a revoked token, a
            # deleted stream or a new playback policy.
            grant = await authorize_hls(request, stream_id, resource, cors)
        response = _memory_response(
            request, stream_id, relative, live, grant, cors, skip
        )
    if response is None:
        located = locate_hls_file(request.app[HUB].hls_root, stream_id, relative)
        if located is None:
            raise _not_found(stream_id, relative, cors)
        path, info = located
        if resource is Resource.SEGMENT:
            response = _segment_response(request, path, info, cors)
        else:
            response = _playlist_response(
                request, stream_id, relative, path, info, grant, cors
            )

    if (
        request.method == "GET"
        and resource is not Resource.MULTIVARIANT
        and grant.session is not None
    ):
        request.app[VIEWERS].touch(
            stream_id,
            grant.session.viewer_key,
            publishing_session_id(request.app[HUB], stream_id),
        )
    return response


def _live_rendition(
    request: web.Request, stream_id: str, relative: str
) -> RenditionFiles | None:
    """Return the low-latency rendition being written that ``relative`` is in."""
    rendition, separator, name = relative.partition("/")
    if not separator or "/" in name:
        return None
    files = request.app[HUB].live_rendition(stream_id, rendition)
    if files is None or files.part_duration is None or files.ended:
        return None
    return files


def parse_delivery_directives(
    query: Mapping[str, str], headers: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """Return the (segment, part) that ``_HLS_msn`` and ``_HLS_part`` request.

    None without ``_HLS_msn``. A request without ``_HLS_part`` waits for the
    segment's first part, as players such as Safari expect. Raises ApiError
    400 for a value that is not a decimal integer, and for ``_HLS_part``
    without ``_HLS_msn``; the error carries ``headers``.
    """
    msn_text = query.get(MSN_DIRECTIVE)
    part_text = query.get(PART_DIRECTIVE)
    if msn_text is None:
        if part_text is not None:
            raise ApiError(
                400,
                f"invalid request: {PART_DIRECTIVE} needs {MSN_DIRECTIVE}, the media"
                " sequence number of the segment that contains the part",
                headers=headers,
            )
        return None
    msn = _directive_number(MSN_DIRECTIVE, msn_text, headers)
    part = 0
    if part_text is not None:
        part = _directive_number(PART_DIRECTIVE, part_text, headers)
    return msn, part


def parse_skip_directive(
    query: Mapping[str, str], headers: Mapping[str, str] | None = None
) -> SkipRequest | None:
    """Return the delta update that ``_HLS_skip`` requests, or None without it.

    Raises ApiError 400, carrying ``headers``, for a value other than the
    two that RFC 8216bis defines, ``YES`` and ``v2``.
    """
    text = query.get(SKIP_DIRECTIVE)
    if text is None:
        return None
    for skip in SkipRequest:
        if text == skip.value:
            return skip
    raise ApiError(
        400,
        f"invalid {SKIP_DIRECTIVE} {text[:40]!r}: expected YES (skip old media"
        " segments) or v2 (skip old media segments and date ranges)",
        headers=headers,
    )


def _directive_number(name: str, text: str, headers: Mapping[str, str] | None) -> int:
    if not DECIMAL_INTEGER_PATTERN.match(text) or int(text) >= 2**64:
        raise ApiError(
            400,
            f"invalid {name} {text[:40]!r}: expected a decimal integer from 0"
            " to 18446744073709551615",
            headers=headers,
        )
    return int(text)


async def _block_for_directives(
    request: web.Request,
    live: RenditionFiles,
    position: tuple[int, int],
    cors: dict[str, str],
) -> bool:
    """Wait until the playlist lists the part at ``position`` (segment, part).

    Returns whether the request had to wait. Raises ApiError 400 for a
    position the rendition cannot reach and 503 when the part is not
    written within the rendition's blocking timeout.
    """
    msn, part = position
    problem = live.check_delivery_directive(
        msn, part if PART_DIRECTIVE in request.query else None
    )
    if problem is not None:
        raise ApiError(400, problem, headers=cors)
    if live.part_available(msn, part):
        return False
    timeout = live.blocking_timeout
    if not await live.wait_for_part(msn, part, timeout):
        raise ApiError(
            503,
            f"part {part} of segment {msn} of {live.rendition} was not written"
            f" within {timeout:g} s; reload the playlist without {MSN_DIRECTIVE}",
            headers={**cors, "Cache-Control": "no-store"},
        )
    return True


async def _wait_for_part_file(live: RenditionFiles, name: str) -> bool:
    """Wait for a part that is not written yet, such as a preload hint's.

    Returns False at once for other names and for parts too far ahead to
    wait for, and True after a wait. Once it returns, the part exists, or
    never will (a 404 follows).
    """
    match = PART_NAME_PATTERN.match(name)
    if match is None:
        return False
    msn, part = int(match.group(1)), int(match.group(2))
    if live.part_available(msn, part) or live.check_delivery_directive(msn, part):
        return False
    await live.wait_for_part(msn, part, live.blocking_timeout)
    return True


def _memory_response(
    request: web.Request,
    stream_id: str,
    relative: str,
    live: RenditionFiles,
    grant: Grant,
    cors: dict[str, str],
    skip: SkipRequest | None = None,
) -> web.Response | None:
    """Return the live playlist or part that ``live`` keeps in memory, or None.

    ``skip`` requests the playlist's delta update. None for every other
    name, and when the rendition no longer has it: the caller then looks on
    disk.
    """
    name = relative.rpartition("/")[2]
    if name == "index.m3u8":
        # Without delta updates a request to skip gets the whole playlist,
        # so it shares that playlist's signed copy.
        if live.skip_boundary is None:
            skip = None
        text = live.live_playlist(skip)
        if text is None:
            return None
        signature = _session_signature(request, stream_id, grant)
        # The skip request is part of the key, so a delta update is never
        # served for a request of the whole playlist, nor the other way.
        key = (live.cache_id, live.playlist_version, skip)
        body = request.app[HLS_FILES].signed_playlist(
            key, text, playback.SESSION_PARAMETER, signature
        )
        if body is None:
            return None
        return web.Response(
            body=body,
            content_type=CONTENT_TYPES[".m3u8"],
            charset="utf-8",
            headers={"Cache-Control": PLAYLIST_CACHE_CONTROL, **cors},
        )
    if not name.startswith("part-"):
        return None
    data = live.live_part(name)
    if data is None:
        return None
    # A part never changes once it has its name. It is sent whole, because
    # the playlists offer no byte ranges of parts and HTTP lets a server
    # reply to a Range request with the whole resource.
    response = web.Response(
        body=data, headers={"Cache-Control": SEGMENT_CACHE_CONTROL, **cors}
    )
    response.content_type = CONTENT_TYPES[".m4s"]
    return response


def _session_signature(
    request: web.Request, stream_id: str, grant: Grant
) -> str | None:
    if grant.session is None:
        return None
    signatures = request.app[SIGNATURES]
    cache_key = (stream_id, grant.session)
    signature = signatures.get(cache_key)
    if signature is None:
        key = playback.session_key(request.app[playback.PLAYBACK_SECRET])
        signature = playback.sign_session(key, stream_id, grant.session)
        if len(signatures) >= MAX_SIGNATURES:
            signatures.clear()
        signatures[cache_key] = signature
    return signature


def _playlist_response(
    request: web.Request,
    stream_id: str,
    relative: str,
    path: str,
    info: os.stat_result,
    grant: Grant,
    cors: dict[str, str],
) -> web.Response:
    signature = _session_signature(request, stream_id, grant)
    headers = {"Cache-Control": PLAYLIST_CACHE_CONTROL, **cors}
    try:
        body = request.app[HLS_FILES].playlist(
            path, info, playback.SESSION_PARAMETER, signature
        )
        if body is None:
            text = Path(path).read_text(encoding="utf-8")
            if signature is not None:
                text = playback.add_query_to_uris(
                    text, playback.SESSION_PARAMETER, signature
                )
            body = text.encode()
    except FileNotFoundError:
        raise _not_found(stream_id, relative, cors) from None
    return web.Response(
        body=body,
        content_type=CONTENT_TYPES[".m3u8"],
        charset="utf-8",
        headers=headers,
    )


def _segment_response(
    request: web.Request, path: str, info: os.stat_result, cors: dict[str, str]
) -> web.StreamResponse:
    suffix = os.path.splitext(path)[1]
    headers = {"Cache-Control": SEGMENT_CACHE_CONTROL, **cors}
    if request.method == "GET" and not any(
        name in request.headers for name in FILE_RESPONSE_HEADERS
    ):
        # The validators and the header that FileResponse sends, in its format.
        whole = {
            **headers,
            "Content-Type": CONTENT_TYPES[suffix],
            "ETag": f'"{info.st_mtime_ns:x}-{info.st_size:x}"',
            "Last-Modified": http_date(math.ceil(info.st_mtime)),
            "Accept-Ranges": "bytes",
        }
        response = _whole_file_response(request, path, info, whole)
        if response is not None:
            return response
    # FileResponse handles HEAD, Range, If-None-Match and If-Modified-Since,
    # and sets ETag and Last-Modified. It opens the file in a worker thread.
    response = web.FileResponse(path)
    response.content_type = CONTENT_TYPES[suffix]
    response.headers.update(headers)
    return response


@functools.lru_cache(maxsize=256)
def http_date(seconds: int) -> str:
    """Return the HTTP date of Unix time ``seconds``.

    Segments share a few Last-Modified values, and the front door's Date
    header changes once a second, so the cache keeps both cheap.
    """
    return email.utils.formatdate(seconds, usegmt=True)


def _whole_file_response(
    request: web.Request, path: str, info: os.stat_result, headers: dict[str, str]
) -> web.StreamResponse | None:
    """Return a response that sends the whole file, or None if it changed.

    A file of SENDFILE_MIN_BYTES or more goes out with sendfile on a plain
    TCP connection. Smaller files, and files on a TLS connection up to the
    cache's file limit, go out from HLS_FILES. In bench/hls_serving.py (2 s
    segments of 3 Mbit/s) one sendfile call sent each whole segment. That
    cost less CPU than writing the cached bytes, because Python 3.11's
    transport copies the headers and body into one object, then copies
    whatever the socket did not take.
    """
    cache = request.app[HLS_FILES]
    size = info.st_size
    plain = _plain_socket(request.transport)
    try:
        if size <= cache.max_file_bytes and (size < SENDFILE_MIN_BYTES or not plain):
            body = cache.read(path, info)
            return None if body is None else web.Response(body=body, headers=headers)
        file = open(path, "rb", buffering=0)  # closed by the response
    except OSError:
        return None
    if not same_file(os.fstat(file.fileno()), info):
        file.close()
        return None
    return SendfileResponse(file, size, headers, plain=plain)


def _plain_socket(transport: asyncio.BaseTransport | None) -> bool:
    """Return whether bytes written to the transport's socket reach the peer as is.

    They do not under TLS, and asyncio's TLS transports carry an ``sslcontext``.
    """
    return (
        transport is not None
        and transport.get_extra_info("sslcontext") is None
        and transport.get_extra_info("socket") is not None
    )


class SendfileResponse(web.StreamResponse):
    """Response with the whole of an open file as its body.

    It skips FileResponse's two trips to a worker thread (open and stat,
    then close). On a plain TCP connection it calls sendfile on the socket
    itself, and the headers share packets with the start of the body. In
    bench/hls_serving.py that cut the clients' CPU per request from
    0.26-0.27 ms to 0.20-0.24 ms. The event loop's sendfile sends what
    that call leaves. Under TLS the response writes chunks. The HLS front
    door (hls/front.py) sends it with ``send``.
    """

    def __init__(
        self, file: BinaryIO, size: int, headers: dict[str, str], *, plain: bool
    ) -> None:
        super().__init__(headers=headers)
        self._file = file
        self._plain = plain
        self.content_length = size

    def close_file(self) -> None:
        """Close the file of a response that will not be sent."""
        self._file.close()

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        transport = request.transport
        if transport is None:
            self.close_file()
            raise ConnectionResetError("Connection lost")
        prepare_head = super().prepare
        writer: AbstractStreamWriter | None = None

        async def write_head(_head: bytes) -> None:
            nonlocal writer
            writer = await prepare_head(request)

        async def write_chunk(chunk: bytes) -> None:
            assert writer is not None
            await writer.write(chunk)

        await self.send(transport, write_head, write_chunk, head=b"")
        await super().write_eof()
        return writer

    async def send(
        self,
        transport: asyncio.BaseTransport,
        write_head: Callable[[bytes], Awaitable[None]],
        write_chunk: Callable[[bytes], Awaitable[None]],
        *,
        head: bytes,
    ) -> None:
        """Write the headers ``head``, then the whole file.

        ``write_chunk`` writes body bytes where sendfile cannot be used.
        Closes the file, also on failure. On a plain TCP connection with
        nothing waiting to be written, the headers go straight to the
        socket with MSG_MORE, so the kernel keeps them back until the
        sendfile call that follows. Otherwise ``write_head(head)`` writes
        them, and on a plain connection the socket is corked (TCP_CORK)
        from then to the end of the first sendfile call. At a fixed request
        rate (docs/benchmarks.md) the box spent about 0.15 ms less CPU per
        segment with MSG_MORE than with the cork.
        """
        plain = self._plain
        corked = False
        try:
            head_sent = False
            if plain and head and transport.get_write_buffer_size() == 0:
                count = send_with_more(transport, head)
                head = head[count:]
                head_sent = count > 0 and not head
            if not head_sent:
                corked = plain and set_cork(transport, True)
                await write_head(head)
            size = self.content_length or 0
            sent = 0
            if plain and transport.get_write_buffer_size() == 0:
                sent = sendfile_now(transport, self._file, size)
            if corked:
                corked = False
                set_cork(transport, False)
            if sent < size:
                sent += await self._send_rest(write_chunk, transport, sent, size - sent)
            if sent < size:
                # The client expects Content-Length bytes, so closing the
                # connection is the only way to mark the body as cut short.
                logger.warning(
                    "HLS file %s shrank to %d of %d bytes while it was sent, "
                    "so the connection was closed",
                    self._file.name,
                    sent,
                    size,
                )
                transport.close()
                raise ConnectionResetError(f"file shrank to {sent} of {size} bytes")
        finally:
            if corked:
                set_cork(transport, False)
            self._file.close()

    async def _send_rest(
        self,
        write_chunk: Callable[[bytes], Awaitable[None]],
        transport: asyncio.BaseTransport,
        offset: int,
        count: int,
    ) -> int:
        """Send ``count`` bytes of the file from ``offset``; return the bytes sent."""
        if self._plain:
            try:
                loop = asyncio.get_running_loop()
                return await loop.sendfile(transport, self._file, offset, count)
            except NotImplementedError:
                pass
        # asyncio's own chunked fallback (Python 3.11.7) raised AttributeError
        # on a TLS transport whose client left mid-body. aiohttp's writer
        # raises ConnectionResetError instead, which aiohttp handles.
        self._file.seek(offset)
        sent = 0
        while sent < count:
            size = min(SENDFILE_FALLBACK_CHUNK, count - sent)
            # Read on the event loop, not in a worker thread, because the
            # response closes the file when the client leaves, maybe mid-read.
            chunk = self._file.read(size)
            if not chunk:
                break
            await write_chunk(chunk)
            sent += len(chunk)
        return sent


# None where the platform lacks them: Python offers both on Linux only.
_TCP_CORK = getattr(socket, "TCP_CORK", None)
_MSG_MORE = getattr(socket, "MSG_MORE", None)


def set_cork(transport: asyncio.BaseTransport, on: bool) -> bool:
    """Set or clear TCP_CORK on the transport's socket; return whether it worked.

    While corked, the kernel sends only full packets. The rest goes out when
    the cork comes off, or after 200 ms at the latest (tcp(7)).
    """
    if _TCP_CORK is None:
        return False
    try:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)
    except OSError:
        return False
    return True


def raw_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """Return the socket object under the transport, or None.

    asyncio hands out its sockets wrapped in ``TransportSocket``, which has
    no ``send``. The wrapped socket is its private ``_sock`` attribute (as
    in Python 3.11). Where that is missing this returns None, and callers
    take another way.
    """
    wrapper = transport.get_extra_info("socket")
    sock = getattr(wrapper, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def send_with_more(transport: asyncio.BaseTransport, data: bytes) -> int:
    """Send what the socket takes now of ``data`` with MSG_MORE; return its length.

    The kernel keeps the bytes back until the next send without that flag,
    such as a sendfile call's last piece, so that they share packets with
    what follows. Returns 0 where the platform or the transport does not
    allow it. Call it only when the transport has nothing buffered, or the
    bytes would overtake those.
    """
    sock = raw_socket(transport) if _MSG_MORE is not None else None
    if sock is None:
        return 0
    try:
        return sock.send(data, _MSG_MORE)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError as exc:
        raise ConnectionResetError(f"send failed: {exc}") from exc


def sendfile_now(transport: asyncio.BaseTransport, file: BinaryIO, size: int) -> int:
    """Send what the socket takes now of the first ``size`` bytes of ``file``.

    Returns the number of bytes sent. The socket is non-blocking, so the
    loop ends when its buffer is full.
    """
    socket_fd = transport.get_extra_info("socket").fileno()
    file_fd = file.fileno()
    sent = 0
    while sent < size:
        try:
            count = os.sendfile(socket_fd, file_fd, sent, size - sent)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            raise ConnectionResetError(f"sendfile failed: {exc}") from exc
        if count == 0:
            break
        sent += count
    return sent


async def preflight(request: web.Request) -> web.Response:
    headers = request.app[HLS_CORS].headers(
        request.headers.get("Origin"), preflight=True
    )
    if "Access-Control-Allow-Origin" in headers:
        headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_SECONDS)
    return web.Response(status=204, headers=headers)


def setup_hls_routes(app: web.Application) -> None:
    """Add the /hls routes, the CORS policy, caches and the viewer tracker to ``app``.

    Raises StartupError for an invalid hls_cors_origins setting. app.py
    sets the playback secret (playback.PLAYBACK_SECRET) before the server
    starts.
    """
    config = app[CONFIG]
    app[HLS_CORS] = parse_cors_origins(config.hls_cors_origins)
    app[ACCESS_CACHE] = PlaybackAccessCache()
    app[HLS_FILES] = HlsFileCache()
    app[SIGNATURES] = {}
    app[VIEWERS] = ViewerTracker(
        window=config.hls_viewer_window,
        retain=config.playback_session_seconds,
        max_sessions=config.hls_max_viewer_sessions,
    )
    app.router.add_get("/hls/{stream_id}/{path:.+}", serve_hls)
    app.router.add_route("OPTIONS", "/hls/{stream_id}/{path:.+}", preflight)
