"""Shared fixtures: a real SQLite database in tmp_path and the REST API on loopback.

``api_client`` serves the API from a web.Application built as app.py does
(AppKeys set, ``setup_api`` called, the audit writer running) through
pytest-aiohttp's server on 127.0.0.1. ``make_user`` registers and logs in
users against it, and ``build_app`` builds more applications (a restart,
other settings).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from realcast_box.api import setup_api
from realcast_box.api.audit import AUDIT_WRITER, running_audit
from realcast_box.api.identity import API_KEY_HASH_SECRET
from realcast_box.api.security import load_or_create_secret
from realcast_box.appkeys import CONFIG, DATABASE, HUB, JWT_SECRET, RECORDINGS
from realcast_box.config import Config, load_config
from realcast_box.events import EventBus
from realcast_box.store import streams as stream_store
from realcast_box.store.db import Database
from tests.openapi_check import OpenApiCheckingClient

if TYPE_CHECKING:
    from realcast_box.live.hub import Hub

# argon2's minimum costs, passed through setup_api's password_hasher
# parameter, so the many registrations and logins in tests stay cheap.
FAST_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
TEST_PASSWORD = "correct horse battery"

StartPublishing = Callable[[str], Awaitable[list[str]]]


def make_config(data_dir: Path, **overrides: Any) -> Config:
    """Return the default Config with ``data_dir``, ignoring REALCAST_* variables."""
    return load_config(environ={}, overrides={"data_dir": str(data_dir), **overrides})


def make_hub(config: Config, database: Database) -> Hub:
    """Return a real publication hub writing HLS below config's data directory."""
    # Imported here so that tests which never build the API still run while
    # the live and media packages are broken.
    from realcast_box.live.hub import Hub

    return Hub(
        database,
        config.data_path / "hls",
        segment_duration=config.hls_segment_duration,
        window=config.hls_window,
        takeover_after=config.rtmp_takeover_after,
        part_duration=config.hls_part_duration if config.hls_low_latency else None,
    )


def build_api_app(
    config: Config,
    database: Database,
    hub: Hub | None = None,
    *,
    password_hasher: PasswordHasher = FAST_PASSWORD_HASHER,
) -> web.Application:
    """Build an application serving the API, as app.py wires it.

    The JWT and API key hash secret files are in config's data directory,
    so applications built with the same config share them. Without ``hub``
    the application gets its own, closed when the application shuts down.
    The audit writer runs from startup to cleanup.
    """
    app = web.Application()
    app[CONFIG] = config
    app[DATABASE] = database
    if hub is None:
        hub = make_hub(config, database)
        app.on_cleanup.append(lambda _app: hub.close())
    app[HUB] = hub
    app[JWT_SECRET] = load_or_create_secret(config.data_path / "jwt_secret")
    app[API_KEY_HASH_SECRET] = load_or_create_secret(
        config.data_path / "api_key_hash_secret"
    )
    setup_api(app, password_hasher=password_hasher)

    async def audit_context(app: web.Application) -> AsyncIterator[None]:
        async with running_audit(app, database, config.audit_retention_days):
            yield

    app.cleanup_ctx.append(audit_context)
    app.cleanup_ctx.append(_recordings_context)
    return app


async def _recordings_context(app: web.Application) -> AsyncIterator[None]:
    """Run a recording service on the app's hub, with an event bus of its own."""
    from realcast_box.live.recordings import RecordingService

    config = app[CONFIG]
    service = RecordingService(
        app[DATABASE],
        app[HUB],
        EventBus(),
        config.data_path / "recordings",
        min_free_bytes=0,
        retention_days=0,
    )
    await service.start()
    app[RECORDINGS] = service
    yield
    await service.close()


async def flush_audit(app: web.Application) -> None:
    """Wait until every audit entry queued so far is in the database."""
    await app[AUDIT_WRITER].flush()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(tmp_path / "realcast.db")
    yield db
    await db.close()


@pytest.fixture
async def hub(config: Config, database: Database) -> AsyncIterator[Hub]:
    """Return the real publication hub, with its HLS output in tmp_path."""
    hub = make_hub(config, database)
    yield hub
    await hub.close()


@pytest.fixture
def start_publishing(hub: Hub, database: Database) -> StartPublishing:
    """Return ``await start_publishing(stream_id)``: make the stream live in the hub.

    No media flows and no RTMP connection exists. The call returns the list
    that collects the reasons the hub passes when it disconnects the
    publisher (a kick).
    """

    async def start(stream_id: str) -> list[str]:
        stream = await stream_store.get_stream(database, stream_id)
        assert stream is not None, stream_id
        reasons: list[str] = []

        async def disconnect(reason: str) -> None:
            reasons.append(reason)

        await hub.start(stream, "127.0.0.1:50000", disconnect)
        return reasons

    return start


@pytest.fixture
def api_app(config: Config, database: Database, hub: Hub) -> web.Application:
    return build_api_app(config, database, hub)


@pytest.fixture
def build_app() -> Callable[..., web.Application]:
    """Return build_api_app(config, database, hub=None, *, password_hasher=...)."""
    return build_api_app


@pytest.fixture
async def api_client(api_app: web.Application) -> AsyncIterator[TestClient]:
    """Serve api_app on loopback; each response is checked against the OpenAPI doc."""
    client = OpenApiCheckingClient(TestServer(api_app))
    await client.start_server()
    yield client
    await client.close()


@dataclass
class ApiUser:
    """A registered, logged-in user and the client it was registered through."""

    id: str
    email: str
    password: str
    token: str
    client: TestClient

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def create_app(self, name: str = "Test app", **fields: Any) -> dict:
        response = await self.client.post(
            "/api/apps", json={"name": name, **fields}, headers=self.headers
        )
        assert response.status == 201, await response.text()
        return await response.json()

    async def create_stream(
        self, app_id: str, title: str = "Test stream", **fields: Any
    ) -> dict:
        response = await self.client.post(
            "/api/streams",
            json={"app_id": app_id, "title": title, **fields},
            headers=self.headers,
        )
        assert response.status == 201, await response.text()
        return await response.json()

    async def create_api_key(
        self, app_id: str, scopes: list[str], name: str = "Test key", **fields: Any
    ) -> dict:
        response = await self.client.post(
            "/api/api-keys",
            json={"app_id": app_id, "name": name, "scopes": scopes, **fields},
            headers=self.headers,
        )
        assert response.status == 201, await response.text()
        return await response.json()


def basic_auth(api_key: str, api_secret: str) -> dict[str, str]:
    """Return the Authorization header of an API key's Basic credentials."""
    credentials = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def key_auth(key: dict) -> dict[str, str]:
    """Return the Basic Authorization header for a key as the API returned it."""
    return basic_auth(key["api_key"], key["api_secret"])


MakeUser = Callable[..., Awaitable[ApiUser]]


@pytest.fixture
def make_user(api_client: TestClient) -> MakeUser:
    """Return ``await make_user(email=None, *, client=None)``.

    It registers and logs in a new user through ``client`` (default
    ``api_client``) and returns an ApiUser.
    """
    counter = 0

    async def register_and_login(
        email: str | None = None, *, client: TestClient | None = None
    ) -> ApiUser:
        nonlocal counter
        counter += 1
        email = email or f"user{counter}@example.com"
        client = client or api_client
        credentials = {"email": email, "password": TEST_PASSWORD}
        response = await client.post(
            "/api/auth/register", json={**credentials, "full_name": "Test User"}
        )
        assert response.status == 201, await response.text()
        response = await client.post("/api/auth/login", json=credentials)
        assert response.status == 200, await response.text()
        body = await response.json()
        return ApiUser(
            id=body["user"]["id"],
            email=email,
            password=TEST_PASSWORD,
            token=body["access_token"],
            client=client,
        )

    return register_and_login
