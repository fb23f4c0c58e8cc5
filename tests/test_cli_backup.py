"""Tests for ``realcast-box backup`` and ``restore`` and the data directory lock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from realcast_box import cli
from realcast_box.app import create_app
from realcast_box.backup import create_backup, latest_schema_version
from realcast_box.config import load_config
from realcast_box.datalock import DataDirLock
from tests.box import start_box, start_publisher
from tests.webhook_receiver import Receiver

PUBLISHER_EMAIL = "publisher@example.com"
PUBLISHER_PASSWORD = "correct horse battery"
SECRET_NAMES = {"jwt-secret.key", "api-key-hash.key", "playback-secret.key"}


async def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m realcast_box ARGS`` in a child process, off the event loop."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("REALCAST_")
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "realcast_box",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    return subprocess.CompletedProcess(
        args, process.returncode, stdout.decode(), stderr.decode()
    )


def invoke(*args: str, input: str | None = None):
    environment = {name: None for name in os.environ if name.startswith("REALCAST_")}
    return CliRunner().invoke(cli.main, list(args), env=environment, input=input)


def table_rows(database: Path) -> dict[str, set[tuple]]:
    """Return every row of every table of ``database``, as sets of tuples."""
    connection = sqlite3.connect(database)
    try:
        names = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            name: set(connection.execute(f'SELECT * FROM "{name}"').fetchall())
            for name in names
        }
    finally:
        connection.close()


def read_archive(path: Path) -> tuple[dict, dict[str, bytes]]:
    with tarfile.open(path, "r:gz") as archive:
        contents = {
            member.name: archive.extractfile(member).read()
            for member in archive.getmembers()
        }
    return json.loads(contents.pop("manifest.json")), contents


def write_archive(path: Path, manifest: dict, contents: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in {
            "manifest.json": json.dumps(manifest).encode(),
            **contents,
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture
async def receiver():
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.close()


@pytest.fixture
def stopped_box_data(tmp_path) -> Path:
    """A stopped box's data directory: a database with one user, and the secrets."""
    data_dir = tmp_path / "data"
    result = invoke(
        "user",
        "create",
        "--data-dir",
        str(data_dir),
        "--email",
        PUBLISHER_EMAIL,
        "--password-stdin",
        input=PUBLISHER_PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    for name in SECRET_NAMES:
        (data_dir / name).write_bytes(os.urandom(32))
        (data_dir / name).chmod(0o600)
    return data_dir


async def test_backup_live_stream_restore_roundtrip(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream("Backed up")
    response = await box.client.post(
        "/api/api-keys",
        json={"app_id": stream["app_id"], "name": "ops", "scopes": ["streams:read"]},
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    api_key = await response.json()
    quality = {"name": "240p", "width": 426, "height": 240, "bitrate": 400, "fps": 25}
    response = await box.client.post(
        "/api/transcoding-profiles",
        json={"app_id": stream["app_id"], "name": "small", "qualities": [quality]},
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    response = await box.client.post(
        "/api/webhooks",
        json={
            "app_id": stream["app_id"],
            "url": receiver.url,
            "events": ["stream.live", "stream.offline"],
        },
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    receiver.secret = (await response.json())["secret"]

    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "60", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live", timeout=60)
        # The delivery of stream.live puts rows into the webhook tables.
        await receiver.wait_for_events("stream.live", timeout=60)
        database = box.data_dir / "realcast.db"
        before = table_rows(database)
        backup_file = tmp_path / "box.tar.gz"
        completed = await run_cli(
            "backup", "--data-dir", str(box.data_dir), "--out", str(backup_file)
        )
        after = table_rows(database)
        assert completed.returncode == 0, completed.stderr
        assert (await box.status(stream["id"]))["status"] == "live"
    finally:
        publisher.kill()
        await publisher.wait()
    await box.client.close()

    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600
    manifest, contents = read_archive(backup_file)
    assert manifest["schema_version"] == latest_schema_version()
    assert set(contents) == {"realcast.db", *SECRET_NAMES}
    for entry in manifest["files"]:
        digest = hashlib.sha256(contents[entry["name"]]).hexdigest()
        assert digest == entry["sha256"], entry["name"]

    restored_dir = tmp_path / "restored"
    completed = await run_cli(
        "restore", str(backup_file), "--data-dir", str(restored_dir)
    )
    assert completed.returncode == 0, completed.stderr
    for name in {"realcast.db", *SECRET_NAMES}:
        path = restored_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        if name in SECRET_NAMES:
            assert path.read_bytes() == (box.data_dir / name).read_bytes(), name

    # Every row that did not change while the backup ran is back, table by
    # table, and each table has the row count that the manifest recorded.
    restored = table_rows(restored_dir / "realcast.db")
    assert set(restored) == set(before)
    for table, rows in restored.items():
        assert len(rows) == manifest["tables"][table], table
        unchanged = before[table] & after[table]
        assert unchanged <= rows, table
        assert len(rows) >= len(unchanged), table

    # A box on the restored directory: users log in, the old access token
    # and API key still work (their secrets are back), and the stream key
    # still publishes.
    config = load_config(
        None,
        environ={},
        overrides={
            "data_dir": str(restored_dir),
            "host": "127.0.0.1",
            "rtmp_port": 0,
        },
    )
    app = create_app(config)
    client = await aiohttp_client(app)
    response = await client.post(
        "/api/auth/login",
        json={"email": PUBLISHER_EMAIL, "password": PUBLISHER_PASSWORD},
    )
    assert response.status == 200, await response.text()
    response = await client.get("/api/auth/me", headers=box.auth)
    assert response.status == 200, await response.text()
    credentials = f"{api_key['api_key']}:{api_key['api_secret']}"
    basic = {
        "Authorization": f"Basic {base64.b64encode(credentials.encode()).decode()}"
    }
    response = await client.get(f"/api/streams/{stream['id']}", headers=basic)
    assert response.status == 200, await response.text()

    restored_box = type(box)(client, app, restored_dir, box.token)
    publisher = await start_publisher(
        restored_box.rtmp_url(stream["stream_key"]), "--seconds", "60", "--realtime"
    )
    try:
        await restored_box.wait_for_status(stream["id"], "live", timeout=60)
        # The restored webhook fires, signed with its restored secret.
        requests = await receiver.wait_for_events("stream.live", count=2, timeout=60)
        for request in requests:
            assert request.verified, request.headers
    finally:
        publisher.kill()
        await publisher.wait()


def test_backup_missing_database_fails(tmp_path):
    result = invoke(
        "backup", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "b")
    )
    assert result.exit_code == 1
    assert f"no database at {tmp_path / 'none' / 'realcast.db'}" in result.output


def test_backup_existing_out_needs_force(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    out.write_text("keep me")
    result = invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    assert result.exit_code == 1
    assert "already exists; pass --force" in result.output
    assert out.read_text() == "keep me"
    result = invoke(
        "backup", "--data-dir", str(stopped_box_data), "--out", str(out), "--force"
    )
    assert result.exit_code == 0, result.output
    assert tarfile.is_tarfile(out)


def test_backup_leaves_no_temporary_files(tmp_path, stopped_box_data):
    out_dir = tmp_path / "backups"
    out_dir.mkdir()
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out_dir / "b"))
    assert [path.name for path in out_dir.iterdir()] == ["b"]


def test_restore_running_box_rejected(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    with DataDirLock(stopped_box_data):
        result = invoke(
            "restore", str(out), "--data-dir", str(stopped_box_data), "--force"
        )
    assert result.exit_code == 1
    assert f"data directory {stopped_box_data} is in use" in result.output
    assert f"process {os.getpid()}" in result.output


def test_restore_non_empty_needs_force(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    old_database = (stopped_box_data / "realcast.db").read_bytes()
    result = invoke("restore", str(out), "--data-dir", str(stopped_box_data))
    assert result.exit_code == 1
    assert "is not empty" in result.output
    assert "--force" in result.output
    assert (stopped_box_data / "realcast.db").read_bytes() == old_database


def test_restore_force_keeps_old_files(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    old_secret = (stopped_box_data / "jwt-secret.key").read_bytes()
    (stopped_box_data / "jwt-secret.key").write_bytes(os.urandom(32))
    result = invoke("restore", str(out), "--data-dir", str(stopped_box_data), "--force")
    assert result.exit_code == 0, result.output
    assert (stopped_box_data / "jwt-secret.key").read_bytes() == old_secret
    folders = list(stopped_box_data.glob("pre-restore-*"))
    assert len(folders) == 1
    assert (folders[0] / "realcast.db").is_file()
    assert (folders[0] / "jwt-secret.key").read_bytes() != old_secret


def test_restore_damaged_file_rejected(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    manifest, contents = read_archive(out)
    contents["jwt-secret.key"] = os.urandom(32)
    damaged = tmp_path / "damaged.tar.gz"
    write_archive(damaged, manifest, contents)
    target = tmp_path / "fresh"
    result = invoke("restore", str(damaged), "--data-dir", str(target))
    assert result.exit_code == 1
    assert "checksum mismatch for jwt-secret.key" in result.output
    assert sorted(path.name for path in target.iterdir()) == ["realcast.lock"]


def test_restore_newer_schema_rejected(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    manifest, contents = read_archive(out)
    newer = latest_schema_version() + 1
    manifest["schema_version"] = newer
    manifest["realcast_box_version"] = "99.0.0"
    changed = tmp_path / "newer.tar.gz"
    write_archive(changed, manifest, contents)
    target = tmp_path / "fresh"
    result = invoke("restore", str(changed), "--data-dir", str(target))
    assert result.exit_code == 1
    assert f"database schema version {newer}, newer than" in result.output
    assert "RealCast Box 99.0.0 or newer" in result.output
    assert not target.exists()


def test_restore_path_outside_rejected(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    manifest, contents = read_archive(out)
    manifest["files"].append({"name": "../escape", "size": 1, "sha256": "0" * 64})
    contents["../escape"] = b"x"
    changed = tmp_path / "escape.tar.gz"
    write_archive(changed, manifest, contents)
    result = invoke("restore", str(changed), "--data-dir", str(tmp_path / "fresh"))
    assert result.exit_code == 1
    assert "invalid file name '../escape'" in result.output
    assert not (tmp_path / "escape").exists()


def test_restore_not_a_backup(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"not an archive")
    result = invoke("restore", str(bogus), "--data-dir", str(tmp_path / "fresh"))
    assert result.exit_code == 1
    assert "is not a RealCast Box backup" in result.output


def serve_expecting_failure(data_dir: Path) -> subprocess.CompletedProcess:
    """Run ``serve`` on ``data_dir`` with free ports, for a start that must fail."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "realcast_box", "serve"),
            *("--data-dir", str(data_dir), "--host", "127.0.0.1"),
            *("--http-port", "0", "--rtmp-port", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_locked_data_dir_fails(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with DataDirLock(data_dir):
        completed = serve_expecting_failure(data_dir)
    assert completed.returncode == 1
    assert f"failed to start: data directory {data_dir} is in use" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_backup_includes_tls_files(tmp_path, stopped_box_data):
    (stopped_box_data / "tls-cert.pem").write_text("certificate")
    (stopped_box_data / ".jwt-secret.key.1a2b.tmp").write_bytes(b"partial")
    out = tmp_path / "box.tar.gz"
    result = invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    assert result.exit_code == 0, result.output
    manifest, contents = read_archive(out)
    assert contents["tls-cert.pem"] == b"certificate"
    assert ".jwt-secret.key.1a2b.tmp" not in contents
    assert [entry["name"] for entry in manifest["files"]] == list(contents)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can change file owners")
def test_restore_root_gives_files_to_owner(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    target = tmp_path / "service"
    target.mkdir()
    os.chown(target, 4321, 4321)
    result = invoke("restore", str(out), "--data-dir", str(target))
    assert result.exit_code == 0, result.output
    for path in target.iterdir():
        assert path.stat().st_uid == 4321, path.name
        assert path.stat().st_gid == 4321, path.name


def test_restore_truncated_archive_rejected(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    whole = out.read_bytes()
    # Cut inside the gzip header, inside the manifest, and inside the database.
    for cut in (10, 1000, len(whole) // 2):
        truncated = tmp_path / f"cut-{cut}.tar.gz"
        truncated.write_bytes(whole[:cut])
        target = tmp_path / f"fresh-{cut}"
        result = invoke("restore", str(truncated), "--data-dir", str(target))
        assert result.exit_code == 1, cut
        assert f"{truncated} is damaged or truncated" in result.output, cut
        assert not (target / "realcast.db").exists(), cut


def test_restore_member_larger_than_manifest(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    manifest, contents = read_archive(out)
    # 64 MiB of zeros compress to well under 1 MiB, so a restore that
    # extracts before it compares sizes fills the disk from a small file.
    contents["realcast.db"] += bytes(64 * 1024 * 1024)
    inflated = tmp_path / "inflated.tar.gz"
    write_archive(inflated, manifest, contents)
    target = tmp_path / "fresh"
    result = invoke("restore", str(inflated), "--data-dir", str(target))
    assert result.exit_code == 1
    expected = manifest["files"][0]["size"]
    assert f"member realcast.db is {len(contents['realcast.db'])} bytes" in (
        result.output
    )
    assert f"the manifest lists {expected}" in result.output
    assert sorted(path.name for path in target.iterdir()) == ["realcast.lock"]


def test_restore_unexpected_file_name_rejected(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    manifest, contents = read_archive(out)
    # A file named like a folder of the box would replace that folder.
    for name in ("recordings", "realcast.db-wal"):
        changed_manifest = json.loads(json.dumps(manifest))
        changed_manifest["files"].append(
            {"name": name, "size": 1, "sha256": hashlib.sha256(b"x").hexdigest()}
        )
        changed = tmp_path / f"{name}.tar.gz"
        write_archive(changed, changed_manifest, {**contents, name: b"x"})
        target = tmp_path / f"box-{name}"
        (target / "recordings" / "app").mkdir(parents=True)
        (target / "recordings" / "app" / "a.mp4").write_bytes(b"video")
        result = invoke("restore", str(changed), "--data-dir", str(target), "--force")
        assert result.exit_code == 1, name
        assert f"invalid file name {name!r} in manifest" in result.output, name
        assert (target / "recordings" / "app" / "a.mp4").read_bytes() == b"video"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_backup_out_unwritable_fails(tmp_path, stopped_box_data):
    # Even root cannot create files in /proc, so this works in CI as root.
    out = Path("/proc/realcast-box.tar.gz")
    result = invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"cannot write backup {out}" in result.output


def test_backup_force_special_file_rejected(tmp_path, stopped_box_data):
    # As root, --out /dev/null --force would replace the device with a file.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = invoke(
        "backup", "--data-dir", str(stopped_box_data), "--out", str(fifo), "--force"
    )
    assert result.exit_code == 1
    assert f"{fifo} is not a regular file" in result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_backup_out_data_file_rejected(tmp_path, stopped_box_data):
    for name in ("realcast.db", "jwt-secret.key", "realcast.db-wal"):
        target = stopped_box_data / name
        before = target.read_bytes() if target.exists() else None
        result = invoke(
            "backup",
            "--data-dir",
            str(stopped_box_data),
            "--out",
            str(target),
            "--force",
        )
        assert result.exit_code == 1, name
        assert f"{target} is a file of the box's data directory" in result.output
        after = target.read_bytes() if target.exists() else None
        assert after == before, name


def test_datalock_symlink_not_followed(tmp_path):
    # The box's user can write the data directory and so could point the
    # lock file at a file of root's, which serve or restore as root empties.
    victim = tmp_path / "victim"
    victim.write_text("precious")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "realcast.lock").symlink_to(victim)
    with pytest.raises(OSError) as caught:
        DataDirLock(data_dir).acquire()
    assert f"{data_dir / 'realcast.lock'} is a symbolic link" in str(caught.value)
    assert victim.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can change file owners")
def test_restore_root_keeps_link_targets(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    target = tmp_path / "service"
    target.mkdir()
    (target / "jwt-secret.key").symlink_to(victim)
    os.chown(target, 4321, 4321)
    result = invoke("restore", str(out), "--data-dir", str(target), "--force")
    assert result.exit_code == 0, result.output
    folders = list(target.glob("pre-restore-*"))
    assert (folders[0] / "jwt-secret.key").is_symlink()
    assert victim.stat().st_uid == 0
    assert victim.read_text() == "root's file"


def test_restore_staging_link_not_followed(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    (stopped_box_data / ".restore-realcast.db.tmp").symlink_to(victim)
    result = invoke("restore", str(out), "--data-dir", str(stopped_box_data), "--force")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "root's file"
    assert table_rows(stopped_box_data / "realcast.db")["users"]


def test_serve_unusable_database_fails(tmp_path, stopped_box_data):
    # A backup archive copied over the database by hand, and a database
    # from a newer version after a downgrade.
    newer = sqlite3.connect(stopped_box_data / "realcast.db")
    newer.execute(f"PRAGMA user_version = {latest_schema_version() + 1}")
    newer.close()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "realcast.db").write_bytes(b"not a database, but long enough" * 100)
    cases = [
        (garbage, "file is not a database"),
        (stopped_box_data, "newer than the latest known migration"),
    ]
    for data_dir, reason in cases:
        completed = serve_expecting_failure(data_dir)
        assert completed.returncode == 1, reason
        assert "Traceback" not in completed.stderr, reason
        assert "failed to start: " in completed.stderr, reason
        assert reason in completed.stderr


def test_backup_out_empty_rejected(tmp_path, stopped_box_data):
    # --out "$BACKUP" with the variable unset in a cron script.
    result = invoke("backup", "--data-dir", str(stopped_box_data), "--out", "")
    assert result.exit_code == 1
    assert "is a directory; name a file for the backup" in result.output
    assert "pass --force" not in result.output


# Leaves a hot rollback journal, as a box does that dies during a write on a
# file system without WAL support: pages spill into the database file
# before the transaction commits, and the journal keeps the old pages.
CRASH_DURING_WRITE = """
import os, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA journal_mode=DELETE")
connection.execute("PRAGMA cache_size=1")
connection.execute("BEGIN")
connection.execute("CREATE TABLE filler (data BLOB)")
for _ in range(200):
    connection.execute("INSERT INTO filler VALUES (?)", (os.urandom(4000),))
connection.execute("UPDATE users SET email = 'half-written@example.com'")
os._exit(9)
"""


def test_restore_force_moves_hot_journal(tmp_path, stopped_box_data):
    out = tmp_path / "box.tar.gz"
    invoke("backup", "--data-dir", str(stopped_box_data), "--out", str(out))
    database = stopped_box_data / "realcast.db"
    old_rows = table_rows(database)
    subprocess.run(
        [sys.executable, "-c", CRASH_DURING_WRITE, str(database)], timeout=120
    )
    assert (stopped_box_data / "realcast.db-journal").is_file()
    result = invoke("restore", str(out), "--data-dir", str(stopped_box_data), "--force")
    assert result.exit_code == 0, result.output
    assert not (stopped_box_data / "realcast.db-journal").exists()
    folder = next(stopped_box_data.glob("pre-restore-*"))
    assert (folder / "realcast.db-journal").is_file()
    # With its journal, the old database rolls back to its last commit.
    assert table_rows(folder / "realcast.db") == old_rows


def test_backup_large_database_streams(tmp_path, stopped_box_data):
    # A box's database grows with chat history and audit entries, and small
    # boards have little memory, so a backup must not hold the whole file.
    connection = sqlite3.connect(stopped_box_data / "realcast.db")
    connection.execute("CREATE TABLE filler (data BLOB)")
    for _ in range(48):
        connection.execute("INSERT INTO filler VALUES (?)", (os.urandom(1 << 20),))
    connection.commit()
    connection.close()
    out = tmp_path / "box.tar.gz"
    tracemalloc.start()
    try:
        manifest = create_backup(stopped_box_data, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    database_entry = manifest["files"][0]
    assert database_entry["size"] > 48 << 20
    assert peak < 16 << 20, f"peak {peak >> 20} MiB of Python memory"
    _, contents = read_archive(out)
    digest = hashlib.sha256(contents["realcast.db"]).hexdigest()
    assert digest == database_entry["sha256"]
