"""In-memory copies of recently served HLS files, for the /hls routes.

The packager replaces a playlist by renaming a new file over it, and a
segment or part file never changes once it has its name. Playlists that
the packager keeps in memory (low-latency HLS) are signed here too, under
a key that changes with their text. So an entry is keyed by the file's
path together with its device, inode, size and modification time, which
come from the stat that each request makes anyway. A replaced file gets a
new key. A deleted one is never looked up, because its request fails at
the stat first.

Memory is bounded: ``max_bytes`` of file contents in all, least recently
used first out, and files larger than ``max_file_bytes`` are never kept.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable

from realcast_box.hls import playback

# Contents kept at once, in bytes. A 2 s segment at 3 Mbit/s is about
# 750 KiB, so this is roughly 85 segments, or their parts.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024
# Playlists kept split for signing. Each is a few kilobytes.
MAX_PLAYLISTS = 256
# Stands for the session signature in a cached playlist. A playlist that
# contains a NUL character is never cached, so the marker cannot clash.
_SIGNATURE_MARKER = "\x00session\x00"

FileKey = tuple[str, int, int, int, int]


def file_identity(info: os.stat_result) -> tuple[int, int, int, int]:
    """Return the device, inode, size and mtime, which identify one version of a file.

    The inode alone is not enough: a file system may give the inode of a
    deleted file to the next file created, such as a replacement written
    under the same name.
    """
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def file_key(path: str, info: os.stat_result) -> FileKey:
    return (path, *file_identity(info))


def same_file(opened: os.stat_result, looked_up: os.stat_result) -> bool:
    """Return whether an opened file is still the one a lookup described."""
    return file_identity(opened) == file_identity(looked_up)


class HlsFileCache:
    """Contents of HLS files, and playlists split where a signature goes."""

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_file_bytes = min(max_file_bytes, max_bytes)
        self._size = 0
        self._files: OrderedDict[FileKey, bytes] = OrderedDict()
        # (file key, query parameter or None) -> the playlist's text split
        # at each place the signature goes.
        self._playlists: OrderedDict[tuple[Hashable, str | None], list[bytes]] = (
            OrderedDict()
        )

    @property
    def size(self) -> int:
        """Bytes of file contents in the cache."""
        return self._size

    def read(self, path: str, stat: os.stat_result) -> bytes | None:
        """Return the contents of the file at ``path`` that ``stat`` describes.

        Returns None when the file is too large to keep, or when it changed
        or vanished since ``stat``, so that the caller serves it from disk.
        Raises OSError from reading the file.
        """
        key = file_key(path, stat)
        data = self._files.get(key)
        if data is not None:
            self._files.move_to_end(key)
            return data
        if stat.st_size > self.max_file_bytes:
            return None
        # NOTE: this reads on the event loop, once per file. The packager has
        # just written the file, so it is expected to be in the page cache.
        with open(path, "rb") as file:
            if not same_file(os.fstat(file.fileno()), stat):
                return None
            data = file.read(self.max_file_bytes + 1)
        if len(data) != stat.st_size:
            return None
        self._files[key] = data
        self._size += len(data)
        while self._size > self.max_bytes:
            _, evicted = self._files.popitem(last=False)
            self._size -= len(evicted)
        return data

    def playlist(
        self, path: str, stat: os.stat_result, parameter: str, signature: str | None
    ) -> bytes | None:
        """Return the playlist with ``parameter=signature`` in each relative URI.

        The result equals ``playback.add_query_to_uris`` on the file's text,
        or the text unchanged when ``signature`` is None. Returns None when
        the file cannot be kept (see ``read``). Raises OSError from reading
        the file and UnicodeDecodeError for a file that is not UTF-8.
        """
        data = self.read(path, stat)
        if data is None:
            return None
        return self.signed_playlist(file_key(path, stat), data, parameter, signature)

    def signed_playlist(
        self, key: Hashable, data: bytes, parameter: str, signature: str | None
    ) -> bytes | None:
        """Return playlist ``data`` with ``parameter=signature`` in each relative URI.

        ``key`` names this exact text: the split text is kept under it, so
        the same key must never stand for other contents. Returns None for
        text that cannot be split (it contains a NUL character). Raises
        UnicodeDecodeError for text that is not UTF-8.
        """
        key = (key, parameter if signature is not None else None)
        pieces = self._playlists.get(key)
        if pieces is None:
            pieces = _split_playlist(data, parameter if signature is not None else None)
            if pieces is None:
                return None
            self._playlists[key] = pieces
            if len(self._playlists) > MAX_PLAYLISTS:
                self._playlists.popitem(last=False)
        else:
            self._playlists.move_to_end(key)
        if signature is None:
            return pieces[0]
        return signature.encode().join(pieces)


def _split_playlist(data: bytes, parameter: str | None) -> list[bytes] | None:
    """Split the playlist's text where the signature goes.

    Returns one piece when ``parameter`` is None. Line endings become LF, as
    reading the file in text mode makes them.
    """
    text = data.decode("utf-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if parameter is None:
        return [text.encode()]
    if _SIGNATURE_MARKER[0] in text:
        return None
    template = playback.add_query_to_uris(text, parameter, _SIGNATURE_MARKER)
    return [piece.encode() for piece in template.split(_SIGNATURE_MARKER)]
