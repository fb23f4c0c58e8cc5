"""The data directory lock: at most one running box per data directory.

``realcast-box serve`` keeps an exclusive ``flock`` on ``realcast.lock`` in
the data directory for as long as it runs, and writes its process id into
the file. ``restore`` takes the same lock, so it cannot replace the
database under a running box. The kernel drops the lock when the process
exits, also after a crash or SIGKILL, so a stale file never blocks a start.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from realcast_box.errors import RealcastError

LOCK_FILE = "realcast.lock"


class DataDirLocked(RealcastError):
    """Another process holds the data directory lock."""


class DataDirLock:
    """An exclusive, non-blocking lock on one data directory.

    ``acquire`` raises DataDirLocked when another process (or another open
    of the same file in this process) holds it. Use it as a context manager,
    which takes the lock unless ``acquire`` already did, or call ``release``.
    """

    def __init__(self, data_path: Path) -> None:
        self.data_path = Path(data_path)
        self.path = self.data_path / LOCK_FILE
        self._descriptor: int | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock and write this process's id into the lock file.

        Raises OSError when the lock file is a symbolic link. Following it
        would let the box's user, who can write the data directory, make
        ``serve`` or ``restore`` run as root truncate any file.
        """
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
        try:
            descriptor = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise OSError(
                errno.ELOOP,
                f"lock file {self.path} is a symbolic link; remove it and start again",
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            owner = read_owner(self.data_path)
            by = f" by process {owner}" if owner else ""
            raise DataDirLocked(
                f"data directory {self.data_path} is in use{by}: a box is running"
                " on it; stop that box first"
            ) from None
        except OSError:
            os.close(descriptor)
            raise
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor
        return self

    def release(self) -> None:
        """Drop the lock; safe to call twice. The file stays, empty."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is None:
            return
        os.ftruncate(descriptor, 0)
        os.close(descriptor)

    def __enter__(self) -> DataDirLock:
        if self._descriptor is None:
            self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def read_owner(data_path: Path) -> int | None:
    """Return the process id written in the lock file, or None when there is none."""
    try:
        text = (Path(data_path) / LOCK_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def is_locked(data_path: Path) -> bool:
    """Return whether a process holds the lock on ``data_path`` now.

    A directory that does not exist or cannot be read, or has no lock file,
    counts as not locked.
    """
    path = Path(data_path) / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False
