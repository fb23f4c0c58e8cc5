"""Backup of a data directory: the database and the secret files, in one archive.

A backup is one gzip-compressed tar archive, mode 0600, with these members:

- ``manifest.json``: format and version, the RealCast Box version, the
  database schema version (the number of the last migration applied), the
  creation time, the row count of each table, and each file's size, mode
  and SHA-256 checksum.
- ``realcast.db``: a copy made with SQLite's online backup API, so it is
  consistent while a running box writes. The copy is converted to
  rollback-journal mode, so the one file is complete without a ``-wal`` file.
- the secret files of the data directory: every top-level ``*.key``,
  ``*.pem``, ``*.crt`` and ``*.cert`` file (the access token, API key hash
  and playback secrets, and a TLS certificate and key kept there).

Live HLS segments and recordings are media files and are not in a backup.
realcast_box.restore puts a backup back.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO

from realcast_box import __version__
from realcast_box.datalock import LOCK_FILE
from realcast_box.errors import RealcastError
from realcast_box.store.ids import format_timestamp
from realcast_box.store.migrations import MIGRATIONS

FORMAT = "realcast-box-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE_FILE = "realcast.db"
SECRET_PATTERNS = ("*.key", "*.pem", "*.crt", "*.cert")
# Suffixes of the database file and of SQLite's write-ahead log,
# shared-memory index and rollback journal next to it.
DATABASE_SUFFIXES = ("", "-wal", "-shm", "-journal")
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
# How long the copy waits for a lock that the box's writer holds.
BUSY_TIMEOUT_SECONDS = 30.0
COPY_CHUNK_BYTES = 1024 * 1024


class BackupError(RealcastError):
    """A backup cannot be made, or a backup file cannot be restored."""


def latest_schema_version() -> int:
    """Return the number of the last migration in MIGRATIONS."""
    return MIGRATIONS[-1][0]


def secret_files(data_path: Path) -> list[Path]:
    """Return the secret files at the top of ``data_path``, sorted by name.

    Hidden files are skipped: they are the temporary files that
    load_or_create_secret writes before it links a new secret into place.
    """
    found: set[Path] = set()
    for pattern in SECRET_PATTERNS:
        for path in data_path.glob(pattern):
            if path.is_file() and not path.name.startswith("."):
                found.add(path)
    return sorted(found)


def create_backup(data_path: Path, out: Path, *, force: bool = False) -> dict:
    """Write a backup of ``data_path`` to ``out`` and return its manifest.

    Works while a box runs on ``data_path``: SQLite's backup API reads one
    consistent snapshot while the box keeps writing in WAL mode. The archive
    is written to a temporary file next to ``out`` and renamed into place,
    so ``out`` is never a partial archive. Raises BackupError when the
    database is missing or damaged, ``out`` is the database, lock or a secret
    file of ``data_path``, ``out`` exists and ``force`` is false or it is not
    a regular file, or ``out`` cannot be written.
    """
    data_path = Path(data_path)
    out = Path(out)
    database = data_path / DATABASE_FILE
    if not database.is_file():
        raise BackupError(f"no database at {database}; check --data-dir or --config")
    if _is_box_file(out, data_path):
        raise BackupError(
            f"{out} is a file of the box's data directory; write the backup"
            " outside the data directory"
        )
    if out.is_dir():
        raise BackupError(f"{out} is a directory; name a file for the backup")
    if out.exists() and not force:
        raise BackupError(f"{out} already exists; pass --force to replace it")
    # Only a regular file, such as an older backup, is replaced, because
    # root would otherwise swap a device such as /dev/null for a file.
    if out.exists() and not out.is_file():
        raise BackupError(
            f"{out} is not a regular file; name a new file or an older backup"
        )
    if not out.parent.is_dir():
        raise BackupError(f"directory {out.parent} does not exist")

    try:
        work_directory = tempfile.TemporaryDirectory(
            prefix=".realcast-backup-", dir=out.parent
        )
    except OSError as exc:
        raise _write_failed(out, exc) from None
    with work_directory as work:
        copy = Path(work) / DATABASE_FILE
        _copy_database(database, copy)
        schema_version, tables = _inspect_database(copy)
        members = {DATABASE_FILE: copy}
        # Copied first, so the checksum and the archive see the same bytes
        # even if a file (a renewed TLS certificate) changes meanwhile.
        for path in secret_files(data_path):
            members[path.name] = Path(work) / path.name
            try:
                shutil.copyfile(path, members[path.name])
            except OSError as exc:
                raise BackupError(
                    f"cannot read secret file {path}: {exc.strerror or exc}; run"
                    " the backup as the box's user"
                ) from None
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "realcast_box_version": __version__,
            "schema_version": schema_version,
            "created_at": format_timestamp(datetime.now(UTC)),
            "source_data_dir": str(data_path.resolve()),
            "tables": tables,
            "files": [],
        }
        for name, path in members.items():
            size, digest = _size_and_digest(path)
            manifest["files"].append(
                {
                    "name": name,
                    "size": size,
                    "mode": f"{FILE_MODE:04o}",
                    "sha256": digest,
                }
            )
        try:
            _write_archive(out, manifest, members)
        except OSError as exc:
            raise _write_failed(out, exc) from None
    return manifest


def _is_box_file(out: Path, data_path: Path) -> bool:
    """Return whether ``out`` names the database, the lock or a secret file.

    Replacing one of them with the archive would destroy what the backup is
    meant to keep.
    """
    try:
        same_directory = out.parent.resolve() == data_path.resolve()
    except OSError:
        return False
    if not same_directory:
        return False
    database_files = [DATABASE_FILE + suffix for suffix in DATABASE_SUFFIXES]
    if out.name in (*database_files, LOCK_FILE):
        return True
    return any(fnmatchcase(out.name, pattern) for pattern in SECRET_PATTERNS)


def _write_failed(out: Path, exc: OSError) -> BackupError:
    return BackupError(
        f"cannot write backup {out}: {exc.strerror or exc}; choose a --out"
        " path in a directory that this user can write, with free space"
    )


def _copy_database(source_path: Path, copy_path: Path) -> None:
    """Copy the live database with SQLite's online backup API and check the copy."""
    try:
        source = sqlite3.connect(source_path, timeout=BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open database {source_path}: {exc}") from None
    try:
        target = sqlite3.connect(copy_path)
        try:
            # pages=-1 copies every page in one step, under one read
            # transaction, so the copy is one snapshot of the database.
            source.backup(target, pages=-1)
            target.execute("PRAGMA journal_mode=DELETE")
            result = target.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            target.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy database {source_path}: {exc}") from None
    finally:
        source.close()
    if result != "ok":
        raise BackupError(
            f"database {source_path} failed SQLite's integrity check: {result}"
        )


def _inspect_database(path: Path) -> tuple[int, dict[str, int]]:
    """Return the schema version and the row count of each table of ``path``."""
    connection = sqlite3.connect(path)
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        names = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        counts = {
            name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            for name in names
        }
    finally:
        connection.close()
    return int(version), counts


def _size_and_digest(path: Path) -> tuple[int, str]:
    """Return the size and SHA-256 of ``path``, read in chunks, not whole."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _write_archive(out: Path, manifest: dict, members: dict[str, Path]) -> None:
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        # The umask could have removed bits, but never adds any; set 0600
        # explicitly anyway, since the archive contains every secret.
        os.fchmod(descriptor, FILE_MODE)
        with os.fdopen(descriptor, "wb") as file:
            with tarfile.open(fileobj=file, mode="w:gz") as archive:
                manifest_bytes = json.dumps(manifest, indent=2).encode() + b"\n"
                manifest_file = io.BytesIO(manifest_bytes)
                _add_member(archive, MANIFEST, manifest_file, len(manifest_bytes))
                for entry in manifest["files"]:
                    with members[entry["name"]].open("rb") as member:
                        _add_member(archive, entry["name"], member, entry["size"])
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)


def _add_member(
    archive: tarfile.TarFile, name: str, file: IO[bytes], size: int
) -> None:
    """Add the first ``size`` bytes of ``file`` as the member ``name``."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = FILE_MODE
    info.mtime = int(time.time())
    archive.addfile(info, file)
