"""Property-based fuzz of the whole HTTP API from its OpenAPI document.

A real box runs as a child process (``python -m realcast_box serve``) on a
free loopback port, with rate limits raised so that the fuzz never hits
them. The schemathesis CLI reads the document that the box serves at
/api/openapi.json and generates valid and invalid requests for every
operation. It runs four phases. "examples" uses the schema's examples.
"coverage" sends boundary and invalid values of each parameter and field,
and methods that a path does not list. "fuzzing" draws random requests, and
"stateful" follows the document's links (create an app, then read, change
and delete it). Each response must not be a 5xx, and its status code,
content type, headers and body must be documented.

Generation is deterministic and bounded (MAX_EXAMPLES per operation), so a
run repeats. The fuzz runs twice, on a fresh box each: as a user (Bearer
access token) and as an API key with every scope.

The regression tests at the end cover bugs found while fuzzing by hand
with bytes that schemathesis does not send (header bytes that are not
UTF-8) and values it rarely draws.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from realcast_box.store.api_keys import SCOPES
from tests.conftest import flush_audit

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = 50
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
# Bounds one schemathesis run; a run takes about 30 s on two cores.
FUZZ_TIMEOUT = 300
PASSWORD = "fuzz password 123"
LISTENING = re.compile(r"HTTP API and HLS on (http://127\.0\.0\.1:\d+)")
# Far above what the fuzz sends, so that no request gets a 429.
HIGH_LIMITS = {
    "REALCAST_RATE_LIMIT_PER_MINUTE": "1000000",
    "REALCAST_RATE_LIMIT_PER_HOUR": "10000000",
    "REALCAST_STREAM_RATE_LIMIT_PER_MINUTE": "1000000",
    "REALCAST_STREAM_RATE_LIMIT_PER_HOUR": "10000000",
    "REALCAST_LOGIN_RATE_LIMIT_PER_MINUTE": "1000000",
}
# ensure_resource_availability is left out: it expects a stream to exist
# after its app was deleted, but deleting an app deletes its streams.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "use_after_free",
)
# Stateful sequences follow the document's links alone. Inferred links
# (schemathesis guesses them from field names) mostly pass a user id where
# an app id belongs, so few sequences would reach a real resource.
SCHEMATHESIS_CONFIG = """\
[phases.stateful.inference]
algorithms = []
"""


@dataclass
class FuzzBox:
    """A box in a child process, with a user, an app, a stream and an API key."""

    base_url: str
    log_path: Path
    user_headers: dict[str, str]
    key_headers: dict[str, str]

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def start_box(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start ``realcast_box serve`` on free loopback ports; return it and its URL."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("REALCAST_")
    }
    environment.update(HIGH_LIMITS)
    command = [
        sys.executable,
        "-m",
        "realcast_box",
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--rtmp-port",
        "0",
        "--log-level",
        "info",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=log
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    stop_box(process)
    log = log_path.read_text(errors="replace")
    raise AssertionError(f"the box did not start within {START_TIMEOUT} s: {log}")


def stop_box(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def call(url: str, body: dict, headers: dict[str, str] | None = None) -> dict:
    """POST ``body`` as JSON and return the decoded response body."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
        return json.load(response)


def create_identities(base_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Register a user with an app and a stream; return user and key headers."""
    credentials = {"email": "fuzz@example.com", "password": PASSWORD}
    call(f"{base_url}/api/auth/register", credentials)
    token = call(f"{base_url}/api/auth/login", credentials)["access_token"]
    user_headers = {"Authorization": f"Bearer {token}"}
    app = call(f"{base_url}/api/apps", {"name": "Fuzz"}, user_headers)
    stream = {"app_id": app["id"], "title": "Fuzz stream"}
    call(f"{base_url}/api/streams", stream, user_headers)
    key_body = {"app_id": app["id"], "name": "Fuzz key", "scopes": list(SCOPES)}
    key = call(f"{base_url}/api/api-keys", key_body, user_headers)
    credentials_text = f"{key['api_key']}:{key['api_secret']}"
    basic = base64.b64encode(credentials_text.encode()).decode()
    return user_headers, {"Authorization": f"Basic {basic}"}


@pytest.fixture
def fuzz_box(tmp_path: Path) -> Iterator[FuzzBox]:
    """Start a fresh box, so that one fuzz run cannot delete another's key."""
    pytest.importorskip("schemathesis")
    log_path = tmp_path / "box.log"
    process, base_url = start_box(tmp_path / "data", log_path)
    try:
        user_headers, key_headers = create_identities(base_url)
        yield FuzzBox(base_url, log_path, user_headers, key_headers)
    finally:
        stop_box(process)


def run_schemathesis(
    fuzz_box: FuzzBox, headers: dict[str, str], workdir: Path
) -> subprocess.CompletedProcess:
    """Fuzz every operation in the box's served document with the schemathesis CLI."""
    config = workdir / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    (name, value), *_ = headers.items()
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{fuzz_box.base_url}/api/openapi.json",
        "--url",
        fuzz_box.base_url,
        "--header",
        f"{name}: {value}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        str(REQUEST_TIMEOUT),
        "--no-color",
    ]
    return subprocess.run(
        command,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=FUZZ_TIMEOUT,
        check=False,
    )


def assert_fuzz_passed(result: subprocess.CompletedProcess, fuzz_box: FuzzBox) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"schemathesis found failures:\n{output}\n"
        f"last lines of the box's log:\n{fuzz_box.log_tail()}"
    )


@pytest.mark.timeout(FUZZ_TIMEOUT + 60)
def test_api_fuzz_as_user(fuzz_box, tmp_path):
    result = run_schemathesis(fuzz_box, fuzz_box.user_headers, tmp_path)
    assert_fuzz_passed(result, fuzz_box)


@pytest.mark.timeout(FUZZ_TIMEOUT + 60)
def test_api_fuzz_as_api_key(fuzz_box, tmp_path):
    result = run_schemathesis(fuzz_box, fuzz_box.key_headers, tmp_path)
    assert_fuzz_passed(result, fuzz_box)


# --- regressions ---------------------------------------------------------------


async def raw_request(client, request: bytes) -> tuple[int, dict]:
    """Send raw HTTP/1.1 bytes to the client's server; return status and JSON body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), REQUEST_TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


async def test_fuzz_bearer_token_not_utf8_unauthorized(api_client):
    # aiohttp decodes header bytes that are not UTF-8 to lone surrogates,
    # on which pyjwt raised UnicodeEncodeError: a 500.
    status, body = await raw_request(
        api_client,
        b"GET /api/auth/me HTTP/1.1\r\nHost: localhost\r\n"
        b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    assert status == 401
    assert body["detail"].startswith("invalid access token: ")


async def test_fuzz_user_agent_not_utf8_recorded(api_client, api_app, make_user):
    # SQLite rejected the lone surrogates, and the audit writer lost the
    # whole batch of entries, the failed login's and any others.
    user = await make_user()
    login = json.dumps({"email": user.email, "password": "wrong password"}).encode()
    status, _ = await raw_request(
        api_client,
        b"POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\n"
        b"User-Agent: agent \xff\xfe\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(login), login),
    )
    await flush_audit(api_app)
    response = await user.client.get(
        "/api/audit-logs/security-events", headers=user.headers
    )
    entries = await response.json()
    assert status == 401
    assert [entry["action"] for entry in entries] == ["login_failed"]
    assert entries[0]["user_agent"] == "agent ??"


@pytest.mark.parametrize(
    "expires_at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]
)
async def test_fuzz_expires_at_out_of_range_rejected(make_user, expires_at):
    # datetime.astimezone raised OverflowError for times past year 9999 or
    # before year 1 in UTC: a 500.
    user = await make_user()
    app = await user.create_app()
    response = await user.client.post(
        "/api/api-keys",
        json={
            "app_id": app["id"],
            "name": "Key",
            "scopes": ["apps:read"],
            "expires_at": expires_at,
        },
        headers=user.headers,
    )
    body = await response.json()
    assert response.status == 400
    assert body["detail"].startswith(f"expires_at: time '{expires_at}' is out of range")
