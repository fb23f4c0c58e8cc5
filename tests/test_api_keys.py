"""Tests for /api/api-keys and API key authentication: scopes, isolation, secrets."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from aiohttp import web

from realcast_box.api.errors import ApiError
from realcast_box.api.identity import API_KEY_HASH_SECRET, authenticate
from realcast_box.store import api_keys as key_store
from realcast_box.store.ids import format_timestamp, utc_now
from tests.conftest import basic_auth, flush_audit, key_auth

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
KEY_FIELDS = {
    "id",
    "app_id",
    "name",
    "api_key",
    "scopes",
    "created_at",
    "expires_at",
    "last_used_at",
}
ALL_SCOPES = list(key_store.SCOPES)


@pytest.fixture
async def owner(make_user):
    user = await make_user("owner@example.com")
    user.app = await user.create_app("Owner's app")
    user.stream = await user.create_stream(user.app["id"], "Owner's stream")
    return user


def without(scope: str) -> list[str]:
    return [other for other in ALL_SCOPES if other != scope]


# --- creation and listing ---------------------------------------------------


async def test_keys_create_returns_key_and_secret(owner):
    response = await owner.client.post(
        "/api/api-keys",
        json={
            "app_id": owner.app["id"],
            "name": "Production Key",
            "scopes": ["streams:write", "streams:read", "chat:write"],
        },
        headers=owner.headers,
    )
    body = await response.json()
    assert response.status == 201
    assert set(body) == KEY_FIELDS | {"api_secret"}
    assert re.fullmatch(r"key_[0-9a-f]{16}", body["id"])
    assert body["app_id"] == owner.app["id"]
    assert body["name"] == "Production Key"
    assert re.fullmatch(r"rck_live_[0-9a-f]{32}", body["api_key"])
    assert re.fullmatch(r"rcs_live_[A-Za-z0-9_-]{43}", body["api_secret"])
    assert body["scopes"] == ["streams:read", "streams:write", "chat:write"]
    assert TIMESTAMP.fullmatch(body["created_at"])
    assert body["expires_at"] is None
    assert body["last_used_at"] is None


async def test_keys_create_drops_duplicate_scopes(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read", "apps:read"])
    assert key["scopes"] == ["apps:read"]


async def test_keys_create_unknown_scopes_named(owner):
    response = await owner.client.post(
        "/api/api-keys",
        json={
            "app_id": owner.app["id"],
            "name": "Key",
            "scopes": ["streams:read", "streams:admin", "root"],
        },
        headers=owner.headers,
    )
    detail = (await response.json())["detail"]
    assert response.status == 400
    assert detail.startswith("scopes: unknown value 'root', 'streams:admin'")
    assert "audit:read" in detail


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"scopes": []}, "scopes: must not be empty"),
        ({"scopes": "apps:read"}, "scopes: must be an array"),
        ({"scopes": [1]}, "scopes: items must be strings"),
        ({"name": ""}, "name: must not be empty"),
        ({"name": None}, "name: must be a string"),
        ({"app_id": 5}, "app_id: must be a string"),
        ({"expires_at": "tomorrow"}, "expires_at: invalid ISO 8601 time"),
        ({"expires_at": "2999-01-01T00:00:00"}, "expires_at: time '2999-01-01T"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at: time '2001-01-01T"),
        ({"expires_at": 1700000000}, "expires_at: must be an ISO 8601 time"),
        ({"secret": "mine"}, "secret: unknown field"),
    ],
)
async def test_keys_create_invalid_field_named(owner, changes, expected):
    body = {"app_id": owner.app["id"], "name": "Key", "scopes": ["apps:read"]}
    body.update(changes)
    response = await owner.client.post(
        "/api/api-keys", json=body, headers=owner.headers
    )
    detail = (await response.json())["detail"]
    assert response.status == 400
    assert detail.startswith(expected)


@pytest.mark.parametrize("missing", ["app_id", "name", "scopes"])
async def test_keys_create_missing_field_named(owner, missing):
    body = {"app_id": owner.app["id"], "name": "Key", "scopes": ["apps:read"]}
    del body[missing]
    response = await owner.client.post(
        "/api/api-keys", json=body, headers=owner.headers
    )
    detail = (await response.json())["detail"]
    assert response.status == 400
    assert detail == f"{missing}: field required"


async def test_keys_create_expiry_stored(owner):
    expires = utc_now() + timedelta(days=30)
    key = await owner.create_api_key(
        owner.app["id"],
        ["apps:read"],
        expires_at=expires.isoformat().replace("+00:00", "Z"),
    )
    assert key["expires_at"] == format_timestamp(expires)


async def test_keys_create_expiry_offset_converted_to_utc(owner):
    key = await owner.create_api_key(
        owner.app["id"], ["apps:read"], expires_at="2999-06-01T12:00:00+02:00"
    )
    assert key["expires_at"] == "2999-06-01T10:00:00Z"


async def test_keys_create_other_users_app_not_found(owner, make_user):
    intruder = await make_user()
    response = await intruder.client.post(
        "/api/api-keys",
        json={"app_id": owner.app["id"], "name": "Key", "scopes": ["apps:read"]},
        headers=intruder.headers,
    )
    assert response.status == 404


async def test_keys_list_hides_secret(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    response = await owner.client.get(
        "/api/api-keys", params={"app_id": owner.app["id"]}, headers=owner.headers
    )
    body = await response.json()
    assert response.status == 200
    assert [listed["id"] for listed in body] == [key["id"]]
    assert set(body[0]) == KEY_FIELDS
    assert key["api_secret"] not in await response.text()


async def test_keys_list_only_own_keys(owner, make_user):
    await owner.create_api_key(owner.app["id"], ["apps:read"])
    other = await make_user()
    other_app = await other.create_app()
    other_key = await other.create_api_key(other_app["id"], ["apps:read"])
    response = await other.client.get("/api/api-keys", headers=other.headers)
    body = await response.json()
    assert [listed["id"] for listed in body] == [other_key["id"]]
    assert response.headers["X-Total-Count"] == "1"


async def test_keys_list_other_users_app_not_found(owner, make_user):
    intruder = await make_user()
    response = await intruder.client.get(
        "/api/api-keys", params={"app_id": owner.app["id"]}, headers=intruder.headers
    )
    assert response.status == 404


async def test_keys_other_users_key_not_found(owner, make_user):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    intruder = await make_user()
    regenerate = await intruder.client.post(
        f"/api/api-keys/{key['id']}/regenerate", headers=intruder.headers
    )
    delete = await intruder.client.delete(
        f"/api/api-keys/{key['id']}", headers=intruder.headers
    )
    still_works = await owner.client.get("/api/apps", headers=key_auth(key))
    assert regenerate.status == 404
    assert delete.status == 404
    assert still_works.status == 200


# --- authentication with a key -------------------------------------------------


async def test_keys_basic_auth_reaches_own_app(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    response = await owner.client.get(
        f"/api/apps/{owner.app['id']}", headers=key_auth(key)
    )
    body = await response.json()
    assert response.status == 200
    assert body["id"] == owner.app["id"]


async def test_keys_apps_list_only_key_app(owner):
    second = await owner.create_app("Second app")
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    response = await owner.client.get("/api/apps", headers=key_auth(key))
    body = await response.json()
    assert [app["id"] for app in body] == [owner.app["id"]]
    assert second["id"] != owner.app["id"]
    assert response.headers["X-Total-Count"] == "1"


async def test_keys_streams_list_only_key_app(owner):
    second = await owner.create_app("Second app")
    await owner.create_stream(second["id"], "Elsewhere")
    key = await owner.create_api_key(owner.app["id"], ["streams:read"])
    response = await owner.client.get("/api/streams", headers=key_auth(key))
    body = await response.json()
    assert [stream["id"] for stream in body] == [owner.stream["id"]]


async def test_keys_create_stream_with_key(owner):
    key = await owner.create_api_key(owner.app["id"], ["streams:write"])
    response = await owner.client.post(
        "/api/streams",
        json={"app_id": owner.app["id"], "title": "By key"},
        headers=key_auth(key),
    )
    body = await response.json()
    assert response.status == 201
    assert body["app_id"] == owner.app["id"]
    assert body["title"] == "By key"


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic " + "QQ==",
        "Basic " + "OnNlY3JldA==",
        "Basic " + "a2V5Og==",
        "Basic " + "A" * 5000,
    ],
    ids=["not-base64", "no-colon", "empty-key", "empty-secret", "too-long"],
)
async def test_keys_malformed_basic_unauthorized(owner, header):
    response = await owner.client.get("/api/apps", headers={"Authorization": header})
    body = await response.json()
    assert response.status == 401
    assert body["detail"].startswith("invalid Authorization header: Basic")
    assert response.headers["WWW-Authenticate"].startswith("Basic")


async def test_keys_wrong_secret_unauthorized(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    response = await owner.client.get(
        "/api/apps", headers=basic_auth(key["api_key"], key["api_secret"] + "x")
    )
    body = await response.json()
    assert response.status == 401
    assert body["detail"] == "invalid API key or secret"


async def test_keys_unknown_key_same_error_as_wrong_secret(owner):
    response = await owner.client.get(
        "/api/apps", headers=basic_auth("rck_live_" + "0" * 32, "rcs_live_x")
    )
    body = await response.json()
    assert response.status == 401
    assert body["detail"] == "invalid API key or secret"


# --- scope matrix ------------------------------------------------------------

# (method, path, JSON body, scope). APP and STREAM stand for the owner's ids.
SCOPED_ENDPOINTS = [
    ("GET", "/api/apps", None, "apps:read"),
    ("GET", "/api/apps/APP", None, "apps:read"),
    ("GET", "/api/streams", None, "streams:read"),
    ("GET", "/api/streams?app_id=APP", None, "streams:read"),
    ("GET", "/api/streams/STREAM", None, "streams:read"),
    ("GET", "/api/streams/STREAM/status", None, "streams:read"),
    ("POST", "/api/streams", {"app_id": "APP", "title": "New"}, "streams:write"),
    ("PUT", "/api/streams/STREAM", {"title": "Renamed"}, "streams:write"),
    ("POST", "/api/streams/STREAM/reset-key", None, "streams:write"),
    ("DELETE", "/api/streams/STREAM", None, "streams:write"),
    ("GET", "/api/audit-logs", None, "audit:read"),
    ("GET", "/api/audit-logs/security-events", None, "audit:read"),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _body, _scope in SCOPED_ENDPOINTS]


def fill(template, replacements):
    """Replace placeholders (such as APP) in a path or JSON body with ids."""
    if isinstance(template, dict):
        return {key: fill(value, replacements) for key, value in template.items()}
    if not isinstance(template, str):
        return template
    for placeholder, value in replacements.items():
        template = template.replace(placeholder, value)
    return template


async def call(owner, method, path, body, headers, **extra):
    # Longer placeholders first, so OTHER_APP is not read as OTHER_ + APP.
    replacements = {**extra, "STREAM": owner.stream["id"], "APP": owner.app["id"]}
    return await owner.client.request(
        method,
        fill(path, replacements),
        json=fill(body, replacements),
        headers=headers,
    )


@pytest.mark.parametrize(("method", "path", "body", "scope"), SCOPED_ENDPOINTS)
async def test_keys_scope_allows(owner, method, path, body, scope):
    key = await owner.create_api_key(owner.app["id"], [scope])
    response = await call(owner, method, path, body, key_auth(key))
    assert 200 <= response.status < 300, await response.text()


@pytest.mark.parametrize(("method", "path", "body", "scope"), SCOPED_ENDPOINTS)
async def test_keys_missing_scope_forbidden(owner, method, path, body, scope):
    key = await owner.create_api_key(owner.app["id"], without(scope))
    response = await call(owner, method, path, body, key_auth(key))
    detail = (await response.json())["detail"]
    assert response.status == 403
    assert detail.startswith(f"missing scope {scope}:")


# Endpoints that need a user's access token whatever the key's scopes.
USER_ONLY_ENDPOINTS = [
    ("POST", "/api/apps", {"name": "By key"}),
    ("PUT", "/api/apps/APP", {"name": "By key"}),
    ("DELETE", "/api/apps/APP", None),
    ("POST", "/api/api-keys", {"app_id": "APP", "name": "K", "scopes": ["apps:read"]}),
    ("GET", "/api/api-keys", None),
    ("POST", "/api/api-keys/KEY/regenerate", None),
    ("DELETE", "/api/api-keys/KEY", None),
    ("GET", "/api/auth/me", None),
    (
        "POST",
        "/api/auth/register",
        {"email": "bykey@example.com", "password": "long enough password"},
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), USER_ONLY_ENDPOINTS)
async def test_keys_user_only_endpoint_forbidden(owner, method, path, body):
    key = await owner.create_api_key(owner.app["id"], ALL_SCOPES)
    response = await call(owner, method, path, body, key_auth(key), KEY=key["id"])
    detail = (await response.json())["detail"]
    assert response.status == 403
    assert detail.startswith("API keys cannot ")
    assert "access token" in detail


async def test_keys_register_with_key_creates_no_user(owner, database):
    key = await owner.create_api_key(owner.app["id"], ALL_SCOPES)
    await owner.client.post(
        "/api/auth/register",
        json={"email": "bykey@example.com", "password": "long enough password"},
        headers=key_auth(key),
    )
    row = await database.fetchone(
        "SELECT id FROM users WHERE email_key = ?", ("bykey@example.com",)
    )
    assert row is None


# --- cross-app isolation ------------------------------------------------------


@pytest.fixture
async def other_app(owner):
    """A second app of the same owner, with one stream."""
    app = await owner.create_app("Other app")
    app["stream"] = await owner.create_stream(app["id"], "Other stream")
    return app


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/apps/OTHER_APP", None),
        ("GET", "/api/streams?app_id=OTHER_APP", None),
        ("GET", "/api/streams/OTHER_STREAM", None),
        ("GET", "/api/streams/OTHER_STREAM/status", None),
        ("POST", "/api/streams", {"app_id": "OTHER_APP", "title": "x"}),
        ("PUT", "/api/streams/OTHER_STREAM", {"title": "x"}),
        ("POST", "/api/streams/OTHER_STREAM/reset-key", None),
        ("DELETE", "/api/streams/OTHER_STREAM", None),
        ("GET", "/api/audit-logs?app_id=OTHER_APP", None),
    ],
)
async def test_keys_other_app_not_found(owner, other_app, method, path, body):
    key = await owner.create_api_key(owner.app["id"], ALL_SCOPES)
    response = await call(
        owner,
        method,
        path,
        body,
        key_auth(key),
        OTHER_STREAM=other_app["stream"]["id"],
        OTHER_APP=other_app["id"],
    )
    assert response.status == 404


async def test_keys_other_app_stream_unchanged(owner, other_app):
    key = await owner.create_api_key(owner.app["id"], ALL_SCOPES)
    stream_id = other_app["stream"]["id"]
    await owner.client.delete(f"/api/streams/{stream_id}", headers=key_auth(key))
    response = await owner.client.get(
        f"/api/streams/{stream_id}", headers=owner.headers
    )
    assert response.status == 200


async def test_keys_other_users_stream_not_found(owner, make_user):
    other = await make_user()
    other_app = await other.create_app()
    stream = await other.create_stream(other_app["id"])
    key = await owner.create_api_key(owner.app["id"], ALL_SCOPES)
    response = await owner.client.get(
        f"/api/streams/{stream['id']}", headers=key_auth(key)
    )
    assert response.status == 404


# --- regeneration, revocation, expiry ---------------------------------------


async def test_keys_regenerate_old_secret_fails(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    response = await owner.client.post(
        f"/api/api-keys/{key['id']}/regenerate", headers=owner.headers
    )
    new_key = await response.json()
    old = await owner.client.get("/api/apps", headers=key_auth(key))
    new = await owner.client.get("/api/apps", headers=key_auth(new_key))
    assert response.status == 200
    assert new_key["api_key"] == key["api_key"]
    assert new_key["api_secret"] != key["api_secret"]
    assert set(new_key) == KEY_FIELDS | {"api_secret"}
    assert old.status == 401
    assert new.status == 200


async def test_keys_delete_revokes_at_once(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    before = await owner.client.get("/api/apps", headers=key_auth(key))
    response = await owner.client.delete(
        f"/api/api-keys/{key['id']}", headers=owner.headers
    )
    after = await owner.client.get("/api/apps", headers=key_auth(key))
    again = await owner.client.delete(
        f"/api/api-keys/{key['id']}", headers=owner.headers
    )
    assert before.status == 200
    assert response.status == 204
    assert after.status == 401
    assert again.status == 404


async def test_keys_deleted_app_revokes_keys(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    await owner.client.delete(f"/api/apps/{owner.app['id']}", headers=owner.headers)
    response = await owner.client.get("/api/apps", headers=key_auth(key))
    assert response.status == 401


async def test_keys_expired_key_unauthorized(owner, database):
    key = await owner.create_api_key(
        owner.app["id"], ["apps:read"], expires_at="2999-01-01T00:00:00Z"
    )
    past = format_timestamp(utc_now() - timedelta(seconds=1))
    await database.execute(
        "UPDATE api_keys SET expires_at = ? WHERE id = ?", (past, key["id"])
    )
    response = await owner.client.get("/api/apps", headers=key_auth(key))
    body = await response.json()
    assert response.status == 401
    assert body["detail"].startswith(f"API key {key['id']} expired at {past}")


async def test_keys_unexpired_key_works(owner):
    key = await owner.create_api_key(
        owner.app["id"], ["apps:read"], expires_at="2999-01-01T00:00:00Z"
    )
    response = await owner.client.get("/api/apps", headers=key_auth(key))
    assert response.status == 200


async def test_keys_expired_key_wrong_secret_not_told_expired(owner, database):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    await database.execute(
        "UPDATE api_keys SET expires_at = ? WHERE id = ?",
        ("2001-01-01T00:00:00Z", key["id"]),
    )
    response = await owner.client.get(
        "/api/apps", headers=basic_auth(key["api_key"], "rcs_live_wrong")
    )
    body = await response.json()
    assert body["detail"] == "invalid API key or secret"


# --- last_used_at --------------------------------------------------------------


async def listed_key(owner, key_id):
    response = await owner.client.get("/api/api-keys", headers=owner.headers)
    return next(key for key in await response.json() if key["id"] == key_id)


async def test_keys_last_used_set_on_use(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    before = utc_now()
    await owner.client.get("/api/apps", headers=key_auth(key))
    listed = await listed_key(owner, key["id"])
    assert listed["last_used_at"] is not None
    assert listed["last_used_at"] >= format_timestamp(before)


async def test_keys_last_used_advances(owner, database):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    await database.execute(
        "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
        ("2020-01-01T00:00:00Z", key["id"]),
    )
    await owner.client.get("/api/apps", headers=key_auth(key))
    listed = await listed_key(owner, key["id"])
    assert listed["last_used_at"] > "2020-01-01T00:00:00Z"


async def test_keys_last_used_unchanged_by_failed_auth(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    await owner.client.get(
        "/api/apps", headers=basic_auth(key["api_key"], "rcs_live_wrong")
    )
    listed = await listed_key(owner, key["id"])
    assert listed["last_used_at"] is None


# --- storage of the secret -----------------------------------------------------


async def test_keys_secret_not_stored_in_plain_text(owner, database, api_app):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    regenerated = await owner.client.post(
        f"/api/api-keys/{key['id']}/regenerate", headers=owner.headers
    )
    new_secret = (await regenerated.json())["api_secret"]
    await flush_audit(api_app)
    stored = b""
    for suffix in ("", "-wal", "-shm"):
        path = database.path.with_name(database.path.name + suffix)
        if path.exists():
            stored += path.read_bytes()
    assert key["api_key"].encode() in stored
    assert key["api_secret"].encode() not in stored
    assert new_secret.encode() not in stored


async def test_keys_secret_stored_as_keyed_hash(owner, database, api_app):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    row = await database.fetchone(
        "SELECT secret_hash FROM api_keys WHERE id = ?", (key["id"],)
    )
    expected = key_store.hash_api_secret(
        key["api_secret"], api_app[API_KEY_HASH_SECRET]
    )
    assert row["secret_hash"] == expected


async def test_keys_secret_not_in_logs(owner, caplog):
    with caplog.at_level("DEBUG"):
        key = await owner.create_api_key(owner.app["id"], ["apps:read"])
        await owner.client.get("/api/apps", headers=key_auth(key))
        await owner.client.get(
            "/api/apps", headers=basic_auth(key["api_key"], key["api_secret"] + "x")
        )
    assert key["api_secret"] not in caplog.text


# --- authenticate() as middlewares call it ---------------------------------------


async def test_keys_authenticate_cached_per_request(
    config, database, build_app, make_user, aiohttp_client
):
    results = []

    async def twice(request):
        first = await authenticate(request)
        second = await authenticate(request)
        results.append(first is second)
        return web.json_response({"kind": first.kind, "key_id": first.key_id})

    app = build_app(config, database)
    app.router.add_get("/twice", twice)
    client = await aiohttp_client(app)
    user = await make_user(client=client)
    user_app = await user.create_app()
    key = await user.create_api_key(user_app["id"], ["apps:read"])
    response = await client.get("/twice", headers=key_auth(key))
    body = await response.json()
    assert results == [True]
    assert body == {"kind": "api_key", "key_id": key["id"]}


async def test_keys_authenticate_failure_cached(api_app, aiohttp_client):
    statuses = []

    async def twice(request):
        for _ in range(2):
            try:
                await authenticate(request)
            except ApiError as exc:
                statuses.append((exc.status, exc.detail))
        return web.Response(status=204)

    api_app.router.add_get("/twice", twice)
    client = await aiohttp_client(api_app)
    await client.get("/twice", headers=basic_auth("rck_live_nope", "rcs_live_nope"))
    assert statuses == [(401, "invalid API key or secret")] * 2
