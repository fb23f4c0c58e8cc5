"""The realcast-box command: version, config errors, serve and clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from realcast_box import __version__
from realcast_box.cli import MalformedRequestFilter
from tests.box import start_publisher

STARTUP_TIMEOUT = 30.0
SHUTDOWN_LIMIT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "realcast_box", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


class ServeProcess:
    """``realcast-box serve`` in a child process on free loopback ports."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.http_port = free_port()
        self.rtmp_port = free_port()
        self.log_path = data_dir.parent / f"serve-{self.http_port}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "realcast_box",
                "serve",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--http-port",
                str(self.http_port),
                "--rtmp-port",
                str(self.rtmp_port),
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited: {self.output()}")
            try:
                async with session.get(f"{self.base_url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"serve did not start: {self.output()}")

    async def exchange(self, data: bytes) -> bytes:
        """Send ``data`` on a new raw connection; return all the box sends back."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        writer.write(data)
        received = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return received

    def terminate(self, signum: int = signal.SIGTERM) -> float:
        """Send ``signum`` and return how long the process took to exit."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        return time.monotonic() - started

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()


def test_cli_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_cli_unknown_config_key_names_it(tmp_path):
    config = tmp_path / "box.toml"
    config.write_text("rtmp_prot = 1935\n")
    result = run_cli("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert "rtmp_prot" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_env_value_names_key(tmp_path):
    result = run_cli(
        "serve", "--data-dir", str(tmp_path), env={"REALCAST_HLS_WINDOW": "many"}
    )
    assert result.returncode != 0
    assert "hls_window" in result.stderr


def test_cli_port_in_use_is_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli(
            "serve",
            "--data-dir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--rtmp-port",
            str(port),
            "--http-port",
            str(free_port()),
        )
    assert result.returncode != 0
    assert "failed to start" in result.stderr
    assert "--rtmp-port" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_http_port_in_use_names_flag(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli(
            "serve",
            "--data-dir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--rtmp-port",
            str(free_port()),
            "--http-port",
            str(port),
        )
    assert result.returncode != 0
    assert "--http-port" in result.stderr
    assert "started" not in result.stderr
    assert "Traceback" not in result.stderr


async def test_cli_serve_persists_and_stops_on_sigterm(tmp_path):
    data_dir = tmp_path / "data"
    account = {"email": "cli@example.com", "password": "long enough pw"}
    async with aiohttp.ClientSession() as session:
        server = ServeProcess(data_dir)
        try:
            await server.wait_ready(session)
            register = {**account, "full_name": "Cli User"}
            async with session.post(
                f"{server.base_url}/api/auth/register", json=register
            ) as response:
                assert response.status == 201
            async with session.post(
                f"{server.base_url}/api/auth/login", json=account
            ) as response:
                token = (await response.json())["access_token"]
        finally:
            elapsed = server.terminate()
        assert server.process.returncode == 0, server.output()
        assert elapsed < SHUTDOWN_LIMIT
        log = server.output()
        assert "started" in log
        assert str(data_dir) in log

        secret = next(data_dir.glob("*secret*"))
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600

        # The same token still works after a restart: the secret and the user
        # were both kept.
        server = ServeProcess(data_dir)
        try:
            await server.wait_ready(session)
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(
                f"{server.base_url}/api/auth/me", headers=headers
            ) as response:
                assert response.status == 200
                assert (await response.json())["email"] == account["email"]
        finally:
            server.terminate()


async def test_cli_sigterm_ends_live_stream(tmp_path):
    data_dir = tmp_path / "data"
    account = {"email": "live@example.com", "password": "long enough pw"}
    async with aiohttp.ClientSession() as session:
        # Debug level, so that the check below also covers library loggers.
        server = ServeProcess(data_dir, "--log-level", "debug")
        publisher = None
        try:
            await server.wait_ready(session)
            base = server.base_url
            await session.post(f"{base}/api/auth/register", json=account)
            async with session.post(f"{base}/api/auth/login", json=account) as resp:
                token = (await resp.json())["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(
                f"{base}/api/apps", json={"name": "cli"}, headers=headers
            ) as resp:
                app_id = (await resp.json())["id"]
            async with session.post(
                f"{base}/api/streams",
                json={"app_id": app_id, "title": "shutdown"},
                headers=headers,
            ) as resp:
                stream = await resp.json()
            assert stream["rtmp_url"] == f"rtmp://127.0.0.1:{server.rtmp_port}/live"

            url = f"{stream['rtmp_url']}/{stream['stream_key']}"
            publisher = await start_publisher(url, "--seconds", "60", "--realtime")
            status_url = f"{base}/api/streams/{stream['id']}/status"
            # Polled slowly enough to stay within the default rate limit.
            for _ in range(40):
                async with session.get(status_url, headers=headers) as resp:
                    if (await resp.json())["status"] == "live":
                        break
                await asyncio.sleep(0.5)
            else:
                pytest.fail("stream never went live")
            await asyncio.sleep(3)
        finally:
            elapsed = server.terminate()
            if publisher is not None:
                publisher.kill()
                await publisher.wait()

    assert server.process.returncode == 0, server.output()
    assert elapsed < SHUTDOWN_LIMIT
    log = server.output()
    assert stream["stream_key"] not in log
    playlists = list((data_dir / "hls" / stream["id"]).glob("*/index.m3u8"))
    assert playlists
    assert "#EXT-X-ENDLIST" in playlists[0].read_text()


@pytest.mark.parametrize(
    ("setting", "served_by"),
    [("true", "the HLS front door, then aiohttp"), ("false", "aiohttp")],
)
async def test_cli_serve_front_door_setting(tmp_path, monkeypatch, setting, served_by):
    monkeypatch.setenv("REALCAST_HTTP_FRONT_DOOR", setting)
    requests = (
        b"GET /hls/stream_none/index.m3u8 HTTP/1.1\r\nHost: box\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n"
    )
    async with aiohttp.ClientSession() as session:
        server = ServeProcess(tmp_path / "data")
        try:
            await server.wait_ready(session)
            answer = await server.exchange(requests)
        finally:
            server.terminate()
    assert f"(served by {served_by})" in server.output()
    # Either way, the pipelined requests get their responses in order.
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert b'"stream not found: stream_none"' in answer
    assert b"HTTP/1.1 200 OK" in answer.partition(b"HTTP/1.1 404 ")[2]


async def test_cli_malformed_request_logged_as_warning(tmp_path):
    # A header value with a control character: the front door hands the
    # request to aiohttp, which rejects it with a 400.
    request = b"GET /healthz HTTP/1.1\r\nHost: box\r\nX-Bad: a\x01b\r\n\r\n"
    async with aiohttp.ClientSession() as session:
        server = ServeProcess(tmp_path / "data")
        try:
            await server.wait_ready(session)
            answer = await server.exchange(request)
            async with session.get(f"{server.base_url}/healthz") as response:
                healthy = response.status
        finally:
            server.terminate()
    assert answer.partition(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert healthy == 200
    log = server.output()
    lines = [line for line in log.splitlines() if "aiohttp.server" in line]
    assert len(lines) == 1, log
    warning = " WARNING aiohttp.server: Error handling request from 127.0.0.1: "
    assert warning in lines[0]
    assert "(status 400)" in lines[0]
    assert "Traceback" not in log


def filtered_records(level: int, exc: BaseException) -> list[logging.LogRecord]:
    """Log ``exc`` as aiohttp's server does; return the records the filter keeps."""
    logger = logging.getLogger("tests.aiohttp.server")
    logger.setLevel(level)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.addFilter(MalformedRequestFilter())
    try:
        try:
            raise exc
        except BaseException as raised:
            logger.exception(
                "Error handling request from %s", "127.0.0.1", exc_info=raised
            )
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
    return records


def test_cli_log_filter_malformed_one_line():
    exc = BadHttpMessage("Invalid header value char:\n\n  b'a\\x01b'\n    ^")
    (record,) = filtered_records(logging.INFO, exc)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    message = record.getMessage()
    assert message.startswith("Error handling request from 127.0.0.1: Invalid header")
    assert "\n" not in message
    assert message.endswith("(status 400)")


def test_cli_log_filter_long_reason_cut():
    (record,) = filtered_records(logging.INFO, LineTooLong("a" * 9000, "8190"))
    assert len(record.getMessage()) < 300


def test_cli_log_filter_other_errors_kept():
    (record,) = filtered_records(logging.INFO, RuntimeError("handler failed"))
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.getMessage() == "Error handling request from 127.0.0.1"


def test_cli_log_filter_respects_level():
    assert filtered_records(logging.ERROR, BadHttpMessage("bad")) == []


async def test_cli_serve_stops_on_sigint(tmp_path):
    async with aiohttp.ClientSession() as session:
        server = ServeProcess(tmp_path / "data")
        try:
            await server.wait_ready(session)
        finally:
            elapsed = server.terminate(signal.SIGINT)
    assert server.process.returncode == 0, server.output()
    assert elapsed < SHUTDOWN_LIMIT
    assert "stopped" in server.output()
