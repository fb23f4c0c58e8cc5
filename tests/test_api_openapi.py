"""The OpenAPI document: validity, route coverage, limits, /api/docs, and a replay.

The replay test sends a representative request for every documented status
of every operation through OpenApiCheckingClient, which checks each response
against the document (tests/openapi_check.py).
"""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from openapi_spec_validator import validate

from realcast_box import __version__
from realcast_box.api import apidocs, validation
from realcast_box.api.openapi import build_document
from realcast_box.api.ratelimit import RateLimiter, setup_rate_limits
from realcast_box.app import create_app
from realcast_box.store import api_keys as key_store
from realcast_box.store import apps as app_store
from realcast_box.store import streams as stream_store
from tests.box import FreshWindowClock
from tests.conftest import TEST_PASSWORD, basic_auth, key_auth, make_config
from tests.openapi_check import OpenApiCheckingClient, response_checker

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
# The document leaves out the HLS playback files, the recordings under /vod,
# the admin UI's page and static files and the Prometheus metrics, which are
# not JSON.
UNDOCUMENTED_PREFIX = ("/hls/", "/vod/", "/ui")
UNDOCUMENTED_PATHS = {"/", "/metrics"}


def document_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in build_document()["paths"].items()
        for method in item
        if method in METHODS
    }


def router_operations(tmp_path: Path) -> set[tuple[str, str]]:
    """Return (method, path) of the box's routes, without aiohttp's HEAD twins."""
    app = create_app(make_config(tmp_path))
    found = set()
    for route in app.router.routes():
        canonical = route.resource.canonical
        if canonical.startswith(UNDOCUMENTED_PREFIX) or canonical in UNDOCUMENTED_PATHS:
            continue
        found.add((route.method, canonical))
    # aiohttp adds a HEAD route for every GET route, which the document's
    # description states once instead of listing each.
    return {
        (method, path)
        for method, path in found
        if not (method == "HEAD" and ("GET", path) in found)
    }


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in build_document()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


# --- the document itself ----------------------------------------------------


def test_openapi_document_valid():
    validate(build_document())


def test_openapi_info_version():
    document = build_document()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == __version__
    assert document["servers"] == [{"url": "/"}]


def test_openapi_routes_all_documented(tmp_path):
    missing = router_operations(tmp_path) - document_operations()
    assert not missing, f"routes missing from the OpenAPI document: {missing}"


def test_openapi_documented_routes_exist(tmp_path):
    extra = document_operations() - router_operations(tmp_path)
    assert not extra, f"documented operations without a route: {extra}"


def test_openapi_operation_ids_unique():
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    operations(),
    ids=[f"{method.upper()} {path}" for method, path, _ in operations()],
)
def test_openapi_operation_error_statuses(method, path, operation):
    statuses = set(operation["responses"])
    assert "500" in statuses
    if path.startswith("/api/"):
        assert "429" in statuses
    if operation.get("security", True):
        assert {"401", "403"} <= statuses
    if "requestBody" in operation:
        assert {"400", "413"} <= statuses


def request_body_schemas() -> list[tuple[str, dict[str, Any]]]:
    schemas = build_document()["components"]["schemas"]
    found = []
    for _, _, operation in operations():
        if "requestBody" in operation:
            content = operation["requestBody"]["content"]["application/json"]
            name = content["schema"]["$ref"].rsplit("/", 1)[-1]
            found.append((name, schemas[name]))
    return found


@pytest.mark.parametrize(
    ("name", "schema"),
    request_body_schemas(),
    ids=[name for name, _ in request_body_schemas()],
)
def test_openapi_request_body_rejects_unknown_fields(name, schema):
    assert schema["additionalProperties"] is False


def test_openapi_limits_match_validation():
    schemas = build_document()["components"]["schemas"]
    register = schemas["RegisterRequest"]["properties"]
    assert register["password"]["minLength"] == validation.MIN_PASSWORD_LENGTH
    assert register["password"]["maxLength"] == validation.MAX_PASSWORD_LENGTH
    assert register["email"]["maxLength"] == validation.MAX_EMAIL_LENGTH
    app_name = schemas["AppCreate"]["properties"]["name"]
    assert app_name["maxLength"] == validation.MAX_NAME_LENGTH
    description = schemas["StreamCreate"]["properties"]["description"]
    assert description["maxLength"] == validation.MAX_DESCRIPTION_LENGTH


def test_openapi_pagination_limits():
    parameters = build_document()["paths"]["/api/apps"]["get"]["parameters"]
    by_name = {parameter["name"]: parameter["schema"] for parameter in parameters}
    assert by_name["limit"]["minimum"] == 1
    assert by_name["limit"]["maximum"] == validation.MAX_LIMIT
    assert by_name["skip"]["minimum"] == 0


def test_openapi_scopes_match_store():
    schemas = build_document()["components"]["schemas"]
    scopes = schemas["ApiKeyCreate"]["properties"]["scopes"]["items"]["enum"]
    assert scopes == list(key_store.SCOPES)


def test_openapi_build_returns_copy():
    document = build_document()
    document["info"]["title"] = "changed"
    assert build_document()["info"]["title"] != "changed"


# --- serving -----------------------------------------------------------------


async def test_openapi_served_without_auth(api_client):
    response = await api_client.get("/api/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == build_document()


class LinkCollector(HTMLParser):
    """Collect tag names and the href and src attributes of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.links += [value or "" for name, value in attrs if name in ("href", "src")]


async def test_openapi_docs_page_lists_operations(api_client):
    response = await api_client.get("/api/docs")
    page = await response.text()
    assert response.status == 200
    assert response.content_type == "text/html"
    for method, path, operation in operations():
        assert f"{method.upper()}</span>" in page
        assert path in page
        assert f'id="op-{operation["operationId"]}"' in page


async def test_openapi_docs_page_self_contained(api_client):
    response = await api_client.get("/api/docs")
    collector = LinkCollector()
    collector.feed(await response.text())
    assert "script" not in collector.tags
    assert "link" not in collector.tags
    for link in collector.links:
        assert link.startswith(("#", "/api/")), link


def test_openapi_docs_page_escapes_text():
    document = build_document()
    operation = document["paths"]["/api/apps"]["post"]
    operation["summary"] = "<script>alert(1)</script>"
    operation["description"] = 'a "quoted" & <b>bold</b> text'
    page = apidocs.render(document)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page
    assert "&amp; &lt;b&gt;bold&lt;/b&gt;" in page


def test_openapi_docs_page_shows_limits():
    page = apidocs.render(build_document())
    assert f"max length {validation.MAX_NAME_LENGTH}" in page
    assert f"maximum {validation.MAX_LIMIT}" in page


async def test_openapi_stream_status_reconnecting(
    make_user, start_publishing, database
):
    user = await make_user()
    app = await user.create_app()
    stream = await user.create_stream(app["id"])
    await start_publishing(stream["id"])
    await stream_store.mark_stream_reconnecting(database, stream["id"])
    # The checking client fails the request if "reconnecting" is undocumented.
    response = await user.client.get(
        f"/api/streams/{stream['id']}/status", headers=user.headers
    )
    body = await response.json()
    assert body["status"] == "reconnecting"


# --- the response checker ----------------------------------------------------


def test_openapi_checker_rejects_undocumented_status():
    problems = response_checker().problems(
        "GET", "/api/auth/me", 418, {"Content-Type": "application/json"}, b"{}"
    )
    assert problems == [
        "status 418 is not documented (documented: 200, 401, 403, 429, 500)"
    ]


def test_openapi_checker_rejects_body_off_schema():
    body = b'{"id": "user_1", "email": "a@b.c", "full_name": ""}'
    problems = response_checker().problems(
        "GET", "/api/auth/me", 200, {"Content-Type": "application/json"}, body
    )
    assert any("created_at" in problem for problem in problems)
    assert any("user_1" in problem for problem in problems)


def test_openapi_checker_requires_total_count():
    problems = response_checker().problems(
        "GET", "/api/apps", 200, {"Content-Type": "application/json"}, b"[]"
    )
    assert problems == ["required header X-Total-Count is missing"]


# --- replay: every documented status of every operation ----------------------


def large_body() -> io.BytesIO:
    """Return a body over the 1 MiB limit (BytesIO: aiohttp warns on big bytes)."""
    return io.BytesIO(b" " * (validation.MAX_BODY_BYTES + 1))


class Replay:
    """Send requests through the checking client and record (operation, status)."""

    def __init__(self, client: OpenApiCheckingClient) -> None:
        self.client = client
        self.seen: set[tuple[str, str, str]] = set()

    async def send(
        self, method: str, path: str, expected: int, **kwargs: Any
    ) -> dict | list | None:
        response = await self.client.request(method, path, **kwargs)
        text = await response.text()
        assert response.status == expected, f"{method} {path}: {text}"
        route = response_checker().find_route(response.url.raw_path)
        if route is not None:
            self.seen.add((method.lower(), route.template, str(expected)))
        if response.content_type == "application/json":
            return await response.json()
        return None


async def replay_auth(replay: Replay, key_headers: dict[str, str]) -> dict:
    credentials = {"email": "replay@example.com", "password": TEST_PASSWORD}
    await replay.send("POST", "/api/auth/register", 201, json=credentials)
    await replay.send("POST", "/api/auth/register", 409, json=credentials)
    await replay.send("POST", "/api/auth/register", 400, json={"email": "x"})
    await replay.send("POST", "/api/auth/register", 413, data=large_body())
    other = {"email": "other@example.com", "password": TEST_PASSWORD}
    await replay.send(
        "POST", "/api/auth/register", 401, json=other, headers=basic_auth("k", "s")
    )
    await replay.send(
        "POST", "/api/auth/register", 403, json=other, headers=key_headers
    )
    await replay.send("POST", "/api/auth/login", 400, json={"email": "x"})
    await replay.send("POST", "/api/auth/login", 413, data=large_body())
    wrong = {**credentials, "password": "wrong password"}
    await replay.send("POST", "/api/auth/login", 401, json=wrong)
    login = await replay.send("POST", "/api/auth/login", 200, json=credentials)
    user = {"Authorization": f"Bearer {login['access_token']}"}
    await replay.send("GET", "/api/auth/me", 200, headers=user)
    await replay.send("GET", "/api/auth/me", 401)
    await replay.send("GET", "/api/auth/me", 403, headers=key_headers)
    return user


async def replay_apps(replay: Replay, user: dict, key: dict, keyless: dict) -> str:
    send = replay.send
    app = await send("POST", "/api/apps", 201, json={"name": "A"}, headers=user)
    item = f"/api/apps/{app['id']}"
    await send("POST", "/api/apps", 400, json={"nam": "A"}, headers=user)
    await send("POST", "/api/apps", 401, json={"name": "A"})
    await send("POST", "/api/apps", 403, json={"name": "A"}, headers=key)
    await send("POST", "/api/apps", 413, data=large_body(), headers=user)
    await send("GET", "/api/apps", 200, headers=user)
    await send("GET", "/api/apps", 200, headers=key)
    await send("GET", "/api/apps?limit=0", 400, headers=user)
    await send("GET", "/api/apps", 401)
    await send("GET", "/api/apps", 403, headers=keyless)
    await send("GET", item, 200, headers=user)
    await send("GET", item, 401)
    await send("GET", item, 403, headers=keyless)
    await send("GET", "/api/apps/app_0", 404, headers=user)
    await send("PUT", item, 200, json={"description": None}, headers=user)
    await send("PUT", item, 400, json={"name": ""}, headers=user)
    await send("PUT", item, 401, json={})
    await send("PUT", item, 403, json={}, headers=key)
    await send("PUT", "/api/apps/app_0", 404, json={}, headers=user)
    await send("PUT", item, 413, data=large_body(), headers=user)
    await send("DELETE", item, 401)
    await send("DELETE", item, 403, headers=key)
    await send("DELETE", "/api/apps/app_0", 404, headers=user)
    await send("PATCH", item, 405, headers=user)
    return app["id"]


async def replay_streams(
    replay: Replay, user: dict, key: dict, keyless: dict, app_id: str
) -> None:
    send = replay.send
    body = {"app_id": app_id, "title": "S"}
    stream = await send("POST", "/api/streams", 201, json=body, headers=user)
    item = f"/api/streams/{stream['id']}"
    await send("POST", "/api/streams", 400, json={"app_id": app_id}, headers=user)
    await send("POST", "/api/streams", 401, json=body)
    await send("POST", "/api/streams", 403, json=body, headers=keyless)
    missing_app = {"app_id": "app_0", "title": "S"}
    await send("POST", "/api/streams", 404, json=missing_app, headers=user)
    await send("POST", "/api/streams", 413, data=large_body(), headers=user)
    await send("GET", "/api/streams", 200, headers=key)
    await send("GET", "/api/streams?skip=-1", 400, headers=user)
    await send("GET", "/api/streams", 401)
    await send("GET", "/api/streams", 403, headers=keyless)
    await send("GET", "/api/streams?app_id=app_0", 404, headers=user)

    for path in (item, f"{item}/status"):
        await send("GET", path, 200, headers=key)
        await send("GET", path, 401)
        await send("GET", path, 403, headers=keyless)
        await send("GET", path.replace(stream["id"], "stream_0"), 404, headers=user)

    await send("PUT", item, 200, json={"title": "T"}, headers=key)
    await send("PUT", item, 400, json={"title": 1}, headers=user)
    await send("PUT", item, 401, json={})
    await send("PUT", item, 403, json={}, headers=keyless)
    await send("PUT", "/api/streams/stream_0", 404, json={}, headers=user)
    await send("PUT", item, 413, data=large_body(), headers=user)

    await replay_playback(replay, user, key, keyless, item)
    reset = f"{item}/reset-key"
    await send("POST", reset, 200, headers=key)
    await send("POST", reset, 401)
    await send("POST", reset, 403, headers=keyless)
    await send("POST", "/api/streams/stream_0/reset-key", 404, headers=user)

    await send("DELETE", item, 401)
    await send("DELETE", item, 403, headers=keyless)
    await send("DELETE", item, 204, headers=key)
    await send("DELETE", item, 404, headers=user)


async def replay_playback(
    replay: Replay, user: dict, key: dict, keyless: dict, item: str
) -> None:
    send = replay.send
    token = f"{item}/playback-token"
    missing = token.replace(item, "/api/streams/stream_0")
    body = {"viewer_id": "viewer-1", "expiry_minutes": 5}
    await send("POST", token, 200, json=body, headers=key)
    await send("POST", token, 400, json={"viewer_id": " "}, headers=user)
    await send("POST", token, 401, json=body)
    await send("POST", token, 403, json=body, headers=keyless)
    await send("POST", missing, 404, json=body, headers=user)
    await send("POST", token, 413, data=large_body(), headers=user)
    await send("POST", f"{token}/revoke", 200, headers=key)
    await send("POST", f"{token}/revoke", 401)
    await send("POST", f"{token}/revoke", 403, headers=keyless)
    await send("POST", f"{missing}/revoke", 404, headers=user)


async def replay_keys(replay: Replay, user: dict, key: dict, app_id: str) -> None:
    send = replay.send
    body = {"app_id": app_id, "name": "K", "scopes": ["apps:read"]}
    created = await send("POST", "/api/api-keys", 201, json=body, headers=user)
    bad = {**body, "expires_at": "9999-12-31T23:59:59-01:00"}
    await send("POST", "/api/api-keys", 400, json=bad, headers=user)
    await send("POST", "/api/api-keys", 401, json=body)
    await send("POST", "/api/api-keys", 403, json=body, headers=key)
    missing_app = {**body, "app_id": "app_0"}
    await send("POST", "/api/api-keys", 404, json=missing_app, headers=user)
    await send("POST", "/api/api-keys", 413, data=large_body(), headers=user)
    await send("GET", "/api/api-keys", 200, headers=user)
    await send("GET", "/api/api-keys?limit=abc", 400, headers=user)
    await send("GET", "/api/api-keys", 401)
    await send("GET", "/api/api-keys", 403, headers=key)
    await send("GET", "/api/api-keys?app_id=app_0", 404, headers=user)
    regenerate = f"/api/api-keys/{created['id']}/regenerate"
    await send("POST", regenerate, 200, headers=user)
    await send("POST", regenerate, 401)
    await send("POST", regenerate, 403, headers=key)
    await send("POST", "/api/api-keys/key_0/regenerate", 404, headers=user)
    item = f"/api/api-keys/{created['id']}"
    await send("DELETE", item, 401)
    await send("DELETE", item, 403, headers=key)
    await send("DELETE", item, 204, headers=user)
    await send("DELETE", item, 404, headers=user)


async def replay_profiles(
    replay: Replay, user: dict, key: dict, keyless: dict, app_id: str, publish
) -> None:
    send = replay.send
    path = "/api/transcoding-profiles"
    quality = {"name": "720p", "width": 1280, "height": 720, "bitrate": 3000}
    body = {"app_id": app_id, "name": "P", "qualities": [{**quality, "fps": 30}]}
    profile = await send("POST", path, 201, json=body, headers=key)
    item = f"{path}/{profile['id']}"
    await send("POST", path, 400, json={**body, "qualities": []}, headers=user)
    await send("POST", path, 401, json=body)
    await send("POST", path, 403, json=body, headers=keyless)
    await send("POST", path, 404, json={**body, "app_id": "app_0"}, headers=user)
    await send("POST", path, 413, data=large_body(), headers=user)
    await send("GET", path, 200, headers=key)
    await send("GET", f"{path}?limit=0", 400, headers=user)
    await send("GET", path, 401)
    await send("GET", path, 403, headers=keyless)
    await send("GET", f"{path}?app_id=app_0", 404, headers=user)
    await send("GET", item, 200, headers=key)
    await send("GET", item, 401)
    await send("GET", item, 403, headers=keyless)
    await send("GET", f"{path}/profile_0", 404, headers=user)
    await send("PUT", item, 200, json={"audio_bitrate": 96}, headers=key)
    await send("PUT", item, 400, json={"audio_bitrate": 1}, headers=user)
    await send("PUT", item, 401, json={})
    await send("PUT", item, 403, json={}, headers=keyless)
    await send("PUT", f"{path}/profile_0", 404, json={}, headers=user)
    await send("PUT", item, 413, data=large_body(), headers=user)
    settings = {"transcoding_profile_id": profile["id"]}
    stream_body = {"app_id": app_id, "title": "S", "settings": settings}
    stream = await send("POST", "/api/streams", 201, json=stream_body, headers=user)
    await publish(stream["id"])
    await send("DELETE", item, 409, headers=user)
    await send("DELETE", f"/api/streams/{stream['id']}", 204, headers=user)
    await send("DELETE", item, 401)
    await send("DELETE", item, 403, headers=keyless)
    await send("DELETE", item, 204, headers=key)
    await send("DELETE", item, 404, headers=user)
    await send("GET", "/api/system/encoders", 200, headers=key)
    await send("GET", "/api/system/encoders", 401)
    await send("GET", "/api/system/encoders", 403, headers=keyless)


async def replay_recordings(
    replay: Replay, user: dict, key: dict, keyless: dict, app_id: str, publish
) -> None:
    send = replay.send
    stream_body = {"app_id": app_id, "title": "Recorded"}
    stream = await send("POST", "/api/streams", 201, json=stream_body, headers=user)
    start = "/api/recordings/start"
    stop = f"/api/recordings/stop/{stream['id']}"
    body = {"stream_id": stream["id"]}
    await send("POST", start, 409, json=body, headers=user)  # not live
    await publish(stream["id"])
    recording = await send("POST", start, 201, json=body, headers=key)
    await send("POST", start, 409, json=body, headers=user)
    await send("POST", start, 400, json={**body, "title": ""}, headers=user)
    await send("POST", start, 401, json=body)
    await send("POST", start, 403, json=body, headers=keyless)
    await send("POST", start, 404, json={"stream_id": "stream_0"}, headers=user)
    await send("POST", start, 413, data=large_body(), headers=user)
    item = f"/api/recordings/{recording['id']}"
    await send("DELETE", item, 409, headers=user)
    await send("POST", stop, 401)
    await send("POST", stop, 403, headers=keyless)
    await send("POST", "/api/recordings/stop/stream_0", 404, headers=user)
    await send("POST", stop, 200, headers=key)
    await send("POST", stop, 404, headers=user)
    for path in ("/api/recordings/", "/api/recordings"):
        await send("GET", path, 200, headers=key)
        await send("GET", f"{path}?limit=0", 400, headers=user)
        await send("GET", path, 401)
        await send("GET", path, 403, headers=keyless)
        await send("GET", f"{path}?app_id=app_0", 404, headers=user)
    await send("GET", item, 200, headers=key)
    await send("GET", item, 401)
    await send("GET", item, 403, headers=keyless)
    await send("GET", "/api/recordings/rec_0", 404, headers=user)
    await send("PUT", item, 200, json={"title": "Renamed"}, headers=key)
    await send("PUT", item, 400, json={"title": 1}, headers=user)
    await send("PUT", item, 401, json={})
    await send("PUT", item, 403, json={}, headers=keyless)
    await send("PUT", "/api/recordings/rec_0", 404, json={}, headers=user)
    await send("PUT", item, 413, data=large_body(), headers=user)
    await send("DELETE", item, 401)
    await send("DELETE", item, 403, headers=keyless)
    await send("DELETE", item, 204, headers=key)
    await send("DELETE", item, 404, headers=user)


async def replay_webhooks(
    replay: Replay, user: dict, key: dict, keyless: dict, app_id: str
) -> None:
    send = replay.send
    path = "/api/webhooks"
    body = {
        "app_id": app_id,
        "url": "http://127.0.0.1:9/hook",
        "events": ["webhook.test"],
    }
    webhook = await send("POST", path, 201, json=body, headers=key)
    item = f"{path}/{webhook['id']}"
    await send("POST", path, 400, json={**body, "events": ["x"]}, headers=user)
    await send("POST", path, 401, json=body)
    await send("POST", path, 403, json=body, headers=keyless)
    await send("POST", path, 404, json={**body, "app_id": "app_0"}, headers=user)
    await send("POST", path, 413, data=large_body(), headers=user)
    await send("GET", path, 200, headers=key)
    await send("GET", f"{path}?limit=0", 400, headers=user)
    await send("GET", path, 401)
    await send("GET", path, 403, headers=keyless)
    await send("GET", f"{path}?app_id=app_0", 404, headers=user)
    await send("GET", item, 200, headers=key)
    await send("GET", item, 401)
    await send("GET", item, 403, headers=keyless)
    await send("GET", f"{path}/webhook_0", 404, headers=user)
    test = f"{item}/test"
    delivery = await send("POST", test, 202, headers=key)
    await send("POST", test, 401)
    await send("POST", test, 403, headers=keyless)
    await send("POST", f"{path}/webhook_0/test", 404, headers=user)
    deliveries = f"{item}/deliveries"
    await send("GET", deliveries, 200, headers=key)
    await send("GET", f"{deliveries}?status=x", 400, headers=user)
    await send("GET", deliveries, 401)
    await send("GET", deliveries, 403, headers=keyless)
    await send("GET", f"{path}/webhook_0/deliveries", 404, headers=user)
    redeliver = f"{deliveries}/{delivery['id']}/redeliver"
    await send("POST", redeliver, 202, headers=key)
    await send("POST", redeliver, 401)
    await send("POST", redeliver, 403, headers=keyless)
    await send("POST", f"{deliveries}/dlv_0/redeliver", 404, headers=user)
    await send("PUT", item, 200, json={"status": "disabled"}, headers=key)
    await send("POST", test, 409, headers=user)
    await send("POST", redeliver, 409, headers=user)
    await send("PUT", item, 400, json={"status": "x"}, headers=user)
    await send("PUT", item, 401, json={})
    await send("PUT", item, 403, json={}, headers=keyless)
    await send("PUT", f"{path}/webhook_0", 404, json={}, headers=user)
    await send("PUT", item, 413, data=large_body(), headers=user)
    await send("DELETE", item, 401)
    await send("DELETE", item, 403, headers=keyless)
    await send("DELETE", item, 204, headers=key)
    await send("DELETE", item, 404, headers=user)


async def replay_audit(replay: Replay, user: dict, key: dict, keyless: dict) -> None:
    for path in ("/api/audit-logs", "/api/audit-logs/security-events"):
        await replay.send("GET", f"{path}?days=7", 200, headers=user)
        await replay.send("GET", path, 200, headers=key)
        await replay.send("GET", f"{path}?days=0", 400, headers=user)
        await replay.send("GET", path, 401)
        await replay.send("GET", path, 403, headers=keyless)
        await replay.send("GET", f"{path}?app_id=app_0", 404, headers=key)


async def replay_final_deletes(replay: Replay, user: dict, app_id: str) -> None:
    await replay.send("GET", "/api/openapi.json", 200)
    await replay.send("GET", "/api/docs", 200)
    await replay.send("GET", "/api/nothing-here", 404)
    await replay.send("DELETE", f"/api/apps/{app_id}", 204, headers=user)


async def replay_chat(
    replay: Replay, user: dict, key: dict, keyless: dict, app_id: str
) -> None:
    """Replay the chat routes; keyless has chat:read, so reads use no_chat."""
    send = replay.send
    body = {"app_id": app_id, "name": "K", "scopes": ["streams:read"]}
    no_chat = key_auth(
        await send("POST", "/api/api-keys", 201, json=body, headers=user)
    )
    stream = await send(
        "POST", "/api/streams", 201, json={"app_id": app_id, "title": "C"}, headers=user
    )
    base = f"/api/streams/{stream['id']}/chat"
    missing = "/api/streams/stream_0/chat"
    await send("GET", base, 400, headers=user)

    messages = f"{base}/messages"
    message = await send("POST", messages, 201, json={"text": "hi"}, headers=key)
    await send("POST", messages, 400, json={"text": " "}, headers=user)
    await send("POST", messages, 401, json={"text": "hi"})
    await send("POST", messages, 403, json={"text": "hi"}, headers=keyless)
    await send("POST", f"{missing}/messages", 404, json={"text": "hi"}, headers=user)
    await send("POST", messages, 413, data=large_body(), headers=user)
    await send("GET", messages, 200, headers=key)
    await send("GET", f"{messages}?limit=0", 400, headers=user)
    await send("GET", messages, 401)
    await send("GET", messages, 403, headers=no_chat)
    await send("GET", f"{missing}/messages", 404, headers=user)
    item = f"{messages}/{message['id']}"
    await send("DELETE", item, 401)
    await send("DELETE", item, 403, headers=keyless)
    await send("DELETE", item, 204, headers=key)
    await send("DELETE", item, 404, headers=user)

    bans = f"{base}/bans"
    ban = await send("POST", bans, 201, json={"viewer_id": "v"}, headers=key)
    await send("POST", bans, 400, json={"viewer_id": ""}, headers=user)
    await send("POST", bans, 401, json={"viewer_id": "v"})
    await send("POST", bans, 403, json={"viewer_id": "v"}, headers=keyless)
    await send("POST", f"{missing}/bans", 404, json={"viewer_id": "v"}, headers=user)
    await send("POST", bans, 413, data=large_body(), headers=user)
    await send("GET", bans, 200, headers=key)
    await send("GET", bans, 401)
    await send("GET", bans, 403, headers=no_chat)
    await send("GET", f"{missing}/bans", 404, headers=user)
    await send("DELETE", f"{bans}/{ban['id']}", 401)
    await send("DELETE", f"{bans}/{ban['id']}", 403, headers=keyless)
    await send("DELETE", f"{bans}/{ban['id']}", 204, headers=key)
    await send("DELETE", f"{bans}/{ban['id']}", 404, headers=user)

    settings = {"settings": {"chat_enabled": False}}
    await send("PUT", f"/api/streams/{stream['id']}", 200, json=settings, headers=user)
    await send("POST", messages, 409, json={"text": "hi"}, headers=user)


async def make_keys(replay: Replay, user: dict, app_id: str) -> tuple[dict, dict]:
    """Return Basic headers of a key with every scope and of one with none useful."""
    keys = []
    for scopes in (list(key_store.SCOPES), ["chat:read"]):
        body = {"app_id": app_id, "name": "K", "scopes": scopes}
        key = await replay.send("POST", "/api/api-keys", 201, json=body, headers=user)
        keys.append(key_auth(key))
    return keys[0], keys[1]


async def test_openapi_replay_every_status(api_client, make_user, start_publishing):
    replay = Replay(api_client)
    owner = await make_user()
    owner_app = await owner.create_app("Owner app")
    key, keyless = await make_keys(replay, owner.headers, owner_app["id"])

    user = await replay_auth(replay, key)
    app_id = await replay_apps(replay, user, key, keyless)
    key, keyless = await make_keys(replay, user, app_id)
    await replay_streams(replay, user, key, keyless, app_id)
    await replay_keys(replay, user, key, app_id)
    await replay_profiles(replay, user, key, keyless, app_id, start_publishing)
    await replay_webhooks(replay, user, key, keyless, app_id)
    await replay_recordings(replay, user, key, keyless, app_id, start_publishing)
    await replay_chat(replay, user, key, keyless, app_id)
    await replay_audit(replay, user, key, keyless)
    await replay_final_deletes(replay, user, app_id)

    expected = {
        (method, path, status)
        for method, path, operation in operations()
        for status in operation["responses"]
        if status not in ("429", "500") and path.startswith("/api/")
    }
    # The chat handshake's 101 and its 403 for a disallowed Origin (with
    # hls_cors_origins other than "*") are exercised in test_chat.py.
    expected -= {
        ("get", "/api/streams/{stream_id}/chat", "101"),
        ("get", "/api/streams/{stream_id}/chat", "403"),
    }
    missing = sorted(expected - replay.seen)
    assert not missing, f"statuses never replayed: {missing}"


async def test_openapi_replay_rate_limited(database, hub, build_app, tmp_path):
    limited = make_config(tmp_path, rate_limit_per_minute=1)
    app = build_app(limited, database, hub)
    setup_rate_limits(app, RateLimiter(clock=FreshWindowClock()))
    client = OpenApiCheckingClient(TestServer(app))
    await client.start_server()
    try:
        replay = Replay(client)
        await replay.send("GET", "/api/openapi.json", 200)
        body = await replay.send("GET", "/api/openapi.json", 429)
    finally:
        await client.close()
    assert body["retry_after"] >= 1


async def test_openapi_replay_internal_error(make_user, monkeypatch):
    user = await make_user()

    async def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(app_store, "list_apps", fail)
    replay = Replay(user.client)
    body = await replay.send("GET", "/api/apps", 500, headers=user.headers)
    assert body == {"detail": "internal server error", "status_code": 500}
