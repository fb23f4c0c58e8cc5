"""Tests for ``realcast-box user create``: checks, hashing, and logging in after."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys

import aiohttp
import pytest
from click.testing import CliRunner, Result

from realcast_box import cli
from realcast_box.app import create_app
from realcast_box.config import load_config
from tests.test_cli import ServeProcess

EMAIL = "operator@example.com"
PASSWORD = "  long enough, with spaces  "


def create_user(data_dir, *extra: str, input: str | None = None) -> Result:
    arguments = ["user", "create", "--data-dir", str(data_dir), *extra]
    environment = {name: None for name in os.environ if name.startswith("REALCAST_")}
    return CliRunner().invoke(cli.main, arguments, env=environment, input=input)


async def login(client, email: str, password: str):
    return await client.post(
        "/api/auth/login", json={"email": email, "password": password}
    )


async def test_user_create_stopped_box_login(aiohttp_client, tmp_path):
    data_dir = tmp_path / "data"
    # In a thread, because the command runs an event loop of its own.
    result = await asyncio.to_thread(
        create_user,
        data_dir,
        "--email",
        EMAIL,
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert f"({EMAIL})" in result.output

    config = load_config(
        None,
        environ={},
        overrides={"data_dir": str(data_dir), "host": "127.0.0.1", "rtmp_port": 0},
    )
    client = await aiohttp_client(create_app(config))
    response = await login(client, EMAIL, PASSWORD)
    assert response.status == 200, await response.text()
    response = await login(client, EMAIL, PASSWORD.strip())
    assert response.status == 401


async def test_user_create_running_box_login(tmp_path):
    data_dir = tmp_path / "data"
    async with aiohttp.ClientSession() as session:
        server = ServeProcess(data_dir)
        try:
            await server.wait_ready(session)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "realcast_box",
                "user",
                "create",
                "--data-dir",
                str(data_dir),
                "--email",
                EMAIL,
                "--full-name",
                "Olga Operator",
                "--password-stdin",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(
                process.communicate((PASSWORD + "\n").encode()), 120
            )
            assert process.returncode == 0, stderr.decode()
            assert f"({EMAIL})" in stdout.decode()
            async with session.post(
                f"{server.base_url}/api/auth/login",
                json={"email": EMAIL, "password": PASSWORD},
            ) as response:
                assert response.status == 200, await response.text()
                body = await response.json()
        finally:
            server.terminate()
    assert server.process.returncode == 0, server.output()
    assert body["user"]["email"] == EMAIL
    assert body["user"]["full_name"] == "Olga Operator"


def test_user_create_prompt_confirms(tmp_path):
    result = create_user(
        tmp_path / "data", "--email", EMAIL, input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Repeat for confirmation" in result.output
    assert PASSWORD not in result.output


def test_user_create_prompt_mismatch(tmp_path):
    result = create_user(
        tmp_path / "data", "--email", EMAIL, input=f"{PASSWORD}\nsomething else\n"
    )
    assert result.exit_code == 1
    assert "do not match" in result.output


def test_user_create_duplicate_email(tmp_path):
    data_dir = tmp_path / "data"
    first = create_user(
        data_dir, "--email", EMAIL, "--password-stdin", input=PASSWORD + "\n"
    )
    assert first.exit_code == 0, first.output
    second = create_user(
        data_dir, "--email", EMAIL.upper(), "--password-stdin", input=PASSWORD + "\n"
    )
    assert second.exit_code == 1
    assert f"email {EMAIL.upper()!r} is already registered" in second.output


def test_user_create_weak_password(tmp_path):
    result = create_user(
        tmp_path / "data", "--email", EMAIL, "--password-stdin", input="short\n"
    )
    assert result.exit_code == 1
    assert "password: must be at least 8 characters" in result.output


def test_user_create_bad_email(tmp_path):
    result = create_user(
        tmp_path / "data",
        "--email",
        "not-an-email",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 1
    assert "email: invalid email address 'not-an-email'" in result.output


def test_user_create_writes_audit_entry(tmp_path):
    data_dir = tmp_path / "data"
    result = create_user(
        data_dir, "--email", EMAIL, "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    connection = sqlite3.connect(data_dir / "realcast.db")
    try:
        rows = connection.execute(
            "SELECT action, resource_type, detail FROM audit_logs"
        ).fetchall()
        hashes = connection.execute("SELECT password_hash FROM users").fetchall()
    finally:
        connection.close()
    assert rows == [("register", "user", "created with realcast-box user create")]
    assert hashes[0][0].startswith("$argon2id$")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can change file owners")
def test_user_create_root_gives_database_to_owner(tmp_path):
    data_dir = tmp_path / "service"
    data_dir.mkdir()
    os.chown(data_dir, 4321, 4321)
    result = create_user(
        data_dir, "--email", EMAIL, "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    for path in data_dir.iterdir():
        assert path.stat().st_uid == 4321, path.name
        assert path.stat().st_gid == 4321, path.name


def run_user_create(
    data_dir, email: bytes, stdin: bytes
) -> subprocess.CompletedProcess:
    """Run the command in a child process, so argv and stdin are raw bytes."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("REALCAST_")
    }
    command = [sys.executable, "-m", "realcast_box", "user", "create"]
    command += ["--data-dir", str(data_dir), "--email", email, "--password-stdin"]
    return subprocess.run(
        command, input=stdin, capture_output=True, env=environment, timeout=120
    )


def test_user_create_invalid_utf8_rejected(tmp_path):
    # A Latin-1 password file, and an address typed in a Latin-1 terminal.
    cases = [
        (b"ops@example.com", b"caf\xe9 au lait 2024\n", "password"),
        (b"caf\xe9@example.com", PASSWORD.encode() + b"\n", "email"),
    ]
    for email, stdin, field in cases:
        completed = run_user_create(tmp_path / "data", email, stdin)
        stderr = completed.stderr.decode(errors="replace")
        assert completed.returncode == 1, field
        assert "Traceback" not in stderr, field
        assert f"{field}: not valid UTF-8" in stderr, field


def test_user_create_damaged_database_fails(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = data_dir / "realcast.db"
    database.write_bytes(b"not a database, but long enough" * 100)
    result = create_user(
        data_dir, "--email", EMAIL, "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"cannot open database {database}" in result.output
    assert "file is not a database" in result.output


def test_user_create_open_error_no_restore_hint(tmp_path):
    # SQLite does not open a -wal file through a symbolic link. The database
    # itself is fine, so the message must not send the owner to a restore.
    data_dir = tmp_path / "data"
    first = create_user(
        data_dir, "--email", EMAIL, "--password-stdin", input=PASSWORD + "\n"
    )
    assert first.exit_code == 0, first.output
    (data_dir / "realcast.db-wal").symlink_to(tmp_path / "elsewhere")
    result = create_user(
        data_dir,
        "--email",
        "second@example.com",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 1
    assert "unable to open database file" in result.output
    assert "restore a backup" not in result.output
