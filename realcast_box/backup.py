"""Backup and restore of a data directory: the database and the secret files.

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
Restoring takes the data directory lock, so it cannot run while a box is
running on that directory.
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from realcast_box import __version__
from realcast_box.datalock import LOCK_FILE, DataDirLock, DataDirLocked
from realcast_box.errors import RealcastError
from realcast_box.store.ids import format_timestamp
from realcast_box.store.migrations import MIGRATIONS

FORMAT = "realcast-box-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE_FILE = "realcast.db"
SECRET_PATTERNS = ("*.key", "*.pem", "*.crt", "*.cert")
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
# A manifest lists a handful of files and tables; anything larger is not one.
MAX_MANIFEST_BYTES = 1024 * 1024
COPY_CHUNK_BYTES = 1024 * 1024
# How long the copy waits for a lock that the box's writer holds.
BUSY_TIMEOUT_SECONDS = 30.0


class BackupError(RealcastError):
    """A backup cannot be made, or a backup file cannot be restored."""


@dataclass(frozen=True)
class RestoreResult:
    """Outcome of ``restore_backup``: the manifest and where replaced files went."""

    manifest: dict[str, Any]
    moved_to: Path | None


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
    database is missing or damaged, or ``out`` exists and ``force`` is false.
    """
    data_path = Path(data_path)
    out = Path(out)
    database = data_path / DATABASE_FILE
    if not database.is_file():
        raise BackupError(f"no database at {database}; check --data-dir or --config")
    if out.exists() and not force:
        raise BackupError(f"{out} already exists; pass --force to replace it")
    if out.is_dir():
        raise BackupError(f"{out} is a directory; name a file for the backup")
    if not out.parent.is_dir():
        raise BackupError(f"directory {out.parent} does not exist")

    with tempfile.TemporaryDirectory(
        prefix=".realcast-backup-", dir=out.parent
    ) as work:
        copy = Path(work) / DATABASE_FILE
        _copy_database(database, copy)
        schema_version, tables = _inspect_database(copy)
        members = {DATABASE_FILE: copy}
        for path in secret_files(data_path):
            members[path.name] = path
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
        contents = {}
        for name, path in members.items():
            data = path.read_bytes()
            contents[name] = data
            manifest["files"].append(
                {
                    "name": name,
                    "size": len(data),
                    "mode": f"{FILE_MODE:04o}",
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        _write_archive(out, manifest, contents)
    return manifest


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


def _write_archive(out: Path, manifest: dict, contents: dict[str, bytes]) -> None:
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        # The umask could have removed bits, but never adds any; set 0600
        # explicitly anyway, since the archive contains every secret.
        os.fchmod(descriptor, FILE_MODE)
        with os.fdopen(descriptor, "wb") as file:
            with tarfile.open(fileobj=file, mode="w:gz") as archive:
                manifest_bytes = json.dumps(manifest, indent=2).encode() + b"\n"
                _add_member(archive, MANIFEST, manifest_bytes)
                for name, data in contents.items():
                    _add_member(archive, name, data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = FILE_MODE
    info.mtime = int(time.time())
    archive.addfile(info, io.BytesIO(data))


def read_manifest(archive: tarfile.TarFile, source: Path) -> dict[str, Any]:
    """Read and check ``manifest.json``.

    Raises BackupError unless this version of the box can restore the backup.
    """
    try:
        member = archive.getmember(MANIFEST)
    except KeyError:
        raise BackupError(
            f"{source} is not a RealCast Box backup: no {MANIFEST}"
        ) from None
    if not member.isfile() or member.size > MAX_MANIFEST_BYTES:
        raise BackupError(f"{source}: {MANIFEST} is not a valid manifest")
    try:
        manifest = json.loads(_read_member(archive, member))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackupError(f"{source}: {MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{source} is not a RealCast Box backup")
    made_by = manifest.get("realcast_box_version", "an unknown version")
    format_version = manifest.get("format_version")
    if not isinstance(format_version, int) or format_version > FORMAT_VERSION:
        raise BackupError(
            f"{source} has backup format {format_version!r}, newer than the"
            f" {FORMAT_VERSION} that RealCast Box {__version__} reads; restore it"
            f" with RealCast Box {made_by} or newer"
        )
    schema_version = manifest.get("schema_version")
    if not isinstance(schema_version, int) or schema_version < 0:
        raise BackupError(f"{source}: invalid schema_version {schema_version!r}")
    latest = latest_schema_version()
    if schema_version > latest:
        raise BackupError(
            f"{source} contains database schema version {schema_version}, newer than"
            f" the latest version {latest} of RealCast Box {__version__};"
            f" restore it with RealCast Box {made_by} or newer"
        )
    _check_file_list(manifest, source)
    return manifest


def _check_file_list(manifest: dict[str, Any], source: Path) -> None:
    files = manifest.get("files")
    if not isinstance(files, list):
        raise BackupError(f"{source}: manifest has no file list")
    names = []
    for entry in files:
        if not isinstance(entry, dict):
            raise BackupError(f"{source}: invalid file entry {entry!r} in manifest")
        name = entry.get("name")
        # Only plain names: a member may never land outside the data directory.
        if (
            not isinstance(name, str)
            or not name
            or name != os.path.basename(name)
            or name.startswith(".")
            or name in (MANIFEST, LOCK_FILE)
        ):
            raise BackupError(f"{source}: invalid file name {name!r} in manifest")
        if not isinstance(entry.get("sha256"), str) or not isinstance(
            entry.get("size"), int
        ):
            raise BackupError(f"{source}: file {name} has no checksum or size")
        names.append(name)
    if len(set(names)) != len(names):
        raise BackupError(f"{source}: manifest lists a file twice")
    if DATABASE_FILE not in names:
        raise BackupError(f"{source}: manifest lists no {DATABASE_FILE}")


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    extracted = archive.extractfile(member)
    if extracted is None:
        raise BackupError(f"archive member {member.name} is not a regular file")
    with extracted:
        return extracted.read()


def restore_backup(
    source: Path, data_path: Path, *, force: bool = False
) -> RestoreResult:
    """Restore the backup ``source`` into ``data_path``.

    Takes the data directory lock first, so it fails with BackupError while
    a box runs there. An existing database or secret file is only replaced
    with ``force``, and then moved into a ``pre-restore-<time>`` folder in
    the data directory instead of being deleted. Every file is checked
    against its manifest checksum, and the database against the manifest's
    schema version, before anything in ``data_path`` changes.
    """
    source = Path(source)
    data_path = Path(data_path)
    try:
        archive = tarfile.open(source, mode="r:gz")
    except FileNotFoundError:
        raise BackupError(f"backup file {source} not found") from None
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{source} is not a RealCast Box backup: {exc}") from None
    with archive:
        manifest = read_manifest(archive, source)
        try:
            data_path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise BackupError(
                f"cannot create data directory {data_path}: {exc.strerror or exc}"
            ) from None
        try:
            lock = DataDirLock(data_path).acquire()
        except DataDirLocked as exc:
            raise BackupError(f"cannot restore: {exc}") from None
        try:
            existing = _existing_entries(data_path)
            if existing and not force:
                listed = ", ".join(existing[:5]) + (
                    ", ..." if len(existing) > 5 else ""
                )
                raise BackupError(
                    f"data directory {data_path} is not empty (it contains"
                    f" {listed}); pass --force to restore over it, which moves the"
                    " database and secret files it replaces into a pre-restore"
                    " folder there"
                )
            staged = _stage_files(archive, manifest, data_path, source)
            try:
                _check_staged_database(staged[DATABASE_FILE], manifest, source)
                moved_to = _move_replaced(data_path, list(staged))
                for name, path in staged.items():
                    os.replace(path, data_path / name)
                _fsync_directory(data_path)
                _give_to_owner(data_path, [*staged, LOCK_FILE, moved_to])
            finally:
                for path in staged.values():
                    path.unlink(missing_ok=True)
        finally:
            lock.release()
    return RestoreResult(manifest, moved_to)


def _existing_entries(data_path: Path) -> list[str]:
    return sorted(
        entry.name for entry in data_path.iterdir() if entry.name != LOCK_FILE
    )


def _stage_files(
    archive: tarfile.TarFile, manifest: dict[str, Any], data_path: Path, source: Path
) -> dict[str, Path]:
    """Extract every listed file into a hidden file in ``data_path``, checking it.

    Returns {name: staged path}. On a bad checksum or a missing member the
    staged files are removed and BackupError is raised.
    """
    staged: dict[str, Path] = {}
    try:
        for entry in manifest["files"]:
            name = entry["name"]
            try:
                member = archive.getmember(name)
            except KeyError:
                raise BackupError(
                    f"{source} is damaged: {name} is in the manifest but not in"
                    " the archive"
                ) from None
            if not member.isfile():
                raise BackupError(f"{source}: member {name} is not a regular file")
            path = data_path / f".restore-{name}.tmp"
            staged[name] = path
            digest, size = _extract_checked(archive, member, path)
            if digest != entry["sha256"] or size != entry["size"]:
                raise BackupError(
                    f"{source} is damaged: checksum mismatch for {name}"
                    f" (expected {entry['size']} bytes with SHA-256"
                    f" {entry['sha256']}, found {size} bytes with {digest})"
                )
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    return staged


def _extract_checked(
    archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path
) -> tuple[str, int]:
    """Write ``member`` to ``path`` (mode 0600); return its SHA-256 and size."""
    digest = hashlib.sha256()
    size = 0
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)
    with os.fdopen(descriptor, "wb") as file:
        for chunk in _member_chunks(archive, member):
            digest.update(chunk)
            size += len(chunk)
            file.write(chunk)
        file.flush()
        os.fsync(file.fileno())
    return digest.hexdigest(), size


def _member_chunks(
    archive: tarfile.TarFile, member: tarfile.TarInfo
) -> Iterator[bytes]:
    extracted: IO[bytes] | None = archive.extractfile(member)
    if extracted is None:
        raise BackupError(f"archive member {member.name} is not a regular file")
    with extracted:
        while chunk := extracted.read(COPY_CHUNK_BYTES):
            yield chunk


def _check_staged_database(path: Path, manifest: dict[str, Any], source: Path) -> None:
    try:
        connection = sqlite3.connect(path)
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            result = connection.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise BackupError(
            f"{source}: {DATABASE_FILE} is not a database: {exc}"
        ) from None
    if version != manifest["schema_version"]:
        raise BackupError(
            f"{source}: {DATABASE_FILE} has schema version {version}, but the"
            f" manifest says {manifest['schema_version']}"
        )
    if result != "ok":
        raise BackupError(f"{source}: {DATABASE_FILE} failed SQLite's integrity check")


def _move_replaced(data_path: Path, names: list[str]) -> Path | None:
    """Move the files that a restore replaces into a new pre-restore folder.

    The database's ``-wal`` and ``-shm`` files move too: left behind, SQLite
    would apply the old write-ahead log to the restored database.
    """
    candidates = list(names)
    candidates += [DATABASE_FILE + "-wal", DATABASE_FILE + "-shm"]
    present = [
        name for name in dict.fromkeys(candidates) if (data_path / name).exists()
    ]
    if not present:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = data_path / f"pre-restore-{stamp}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = data_path / f"pre-restore-{stamp}-{suffix}"
    folder.mkdir(mode=DIRECTORY_MODE)
    for name in present:
        shutil.move(data_path / name, folder / name)
    return folder


def _give_to_owner(data_path: Path, names: list[str | Path | None]) -> None:
    """Give restored files to the data directory's owner when running as root.

    The box runs as its own user, so files that root restores for it must
    belong to that user, or the box cannot open its database.
    """
    if os.geteuid() != 0:
        return
    owner = data_path.stat()
    if owner.st_uid == 0:
        return
    for name in names:
        if name is None:
            continue
        path = data_path / name
        os.chown(path, owner.st_uid, owner.st_gid)
        if path.is_dir():
            for child in path.iterdir():
                os.chown(child, owner.st_uid, owner.st_gid)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
