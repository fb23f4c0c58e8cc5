"""Restore of a backup made by realcast_box.backup into a data directory.

Every file is checked against the manifest's size and SHA-256 checksum, and
the database against the manifest's schema version, before anything in the
data directory is replaced. Restoring takes the data directory lock, so it
cannot run while a box runs on that directory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

from realcast_box import __version__
from realcast_box.backup import (
    DATABASE_FILE,
    DATABASE_SUFFIXES,
    DIRECTORY_MODE,
    FILE_MODE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SECRET_PATTERNS,
    BackupError,
    latest_schema_version,
)
from realcast_box.datalock import LOCK_FILE, DataDirLock, DataDirLocked

# A manifest lists a handful of files and tables; anything larger is not one.
MAX_MANIFEST_BYTES = 1024 * 1024
COPY_CHUNK_BYTES = 1024 * 1024
# Exceptions that tarfile and gzip raise on a damaged or truncated archive.
# EOFError must not reach click, which would print only "Aborted!".
ARCHIVE_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, tarfile.TarError)


@dataclass(frozen=True)
class RestoreResult:
    """Outcome of ``restore_backup``: the manifest and where replaced files went."""

    manifest: dict[str, Any]
    moved_to: Path | None


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
        if not _is_backup_file_name(name):
            raise BackupError(
                f"{source}: invalid file name {name!r} in manifest; a backup"
                f" contains only {DATABASE_FILE} and top-level"
                f" {', '.join(SECRET_PATTERNS)} files"
            )
        size = entry.get("size")
        if (
            not isinstance(entry.get("sha256"), str)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
        ):
            raise BackupError(f"{source}: file {name} has no checksum or size")
        names.append(name)
    if len(set(names)) != len(names):
        raise BackupError(f"{source}: manifest lists a file twice")
    if DATABASE_FILE not in names:
        raise BackupError(f"{source}: manifest lists no {DATABASE_FILE}")


def _is_backup_file_name(name: object) -> bool:
    """Return whether ``name`` is a file that create_backup writes.

    Only plain names, so a member never lands outside the data directory,
    and only the database and secret files, so a restore never replaces a
    folder of the box (``recordings``, ``hls``) or the database's ``-wal``.
    """
    if not isinstance(name, str) or name != os.path.basename(name):
        return False
    if name.startswith("."):
        return False
    if name == DATABASE_FILE:
        return True
    return any(fnmatchcase(name, pattern) for pattern in SECRET_PATTERNS)


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
    schema version, before any existing file in ``data_path`` changes.
    """
    source = Path(source)
    data_path = Path(data_path)
    try:
        archive = tarfile.open(source, mode="r:gz")
    except FileNotFoundError:
        raise BackupError(f"backup file {source} not found") from None
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{source} is not a RealCast Box backup: {exc}") from None
    except EOFError as exc:
        raise _damaged(source, exc) from None
    try:
        with archive:
            return _restore_archive(archive, source, data_path, force)
    except ARCHIVE_ERRORS as exc:
        raise _damaged(source, exc) from None


def _damaged(source: Path, exc: BaseException) -> BackupError:
    return BackupError(
        f"{source} is damaged or truncated ({exc}); nothing was restored from it,"
        " so restore another backup"
    )


def _restore_archive(
    archive: tarfile.TarFile, source: Path, data_path: Path, force: bool
) -> RestoreResult:
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
    # At once, so a restore that fails below leaves no lock file that
    # the box's user cannot open.
    _give_to_owner(data_path, [LOCK_FILE])
    try:
        existing = _existing_entries(data_path)
        if existing and not force:
            listed = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
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
            _give_to_owner(data_path, [*staged, moved_to])
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
            # Compared before extracting, so a small archive cannot fill the
            # disk with a member far larger than the manifest promises.
            if member.size != entry["size"]:
                raise BackupError(
                    f"{source} is damaged: archive member {name} is {member.size}"
                    f" bytes, but the manifest lists {entry['size']}"
                )
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
    # O_EXCL creates a new file and never follows a symbolic link that an
    # earlier run or the box's user left at this name.
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
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

    The database's ``-wal``, ``-shm`` and ``-journal`` files move too. Left
    behind, SQLite would apply the old write-ahead log or roll back the old
    journal into the restored database, and the old database would lose
    the changes or the rollback that they carry.
    """
    candidates = list(names)
    candidates += [DATABASE_FILE + suffix for suffix in DATABASE_SUFFIXES]
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
        # Links are not followed, so a link in the old data directory never
        # hands its target to the box's user.
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for child in path.iterdir():
                os.chown(child, owner.st_uid, owner.st_gid, follow_symlinks=False)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
