"""Tests for /api/apps: create, list, read, update, delete and user isolation."""

from __future__ import annotations

import re

import pytest

from realcast_box.store import streams as stream_store

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
SETTINGS = {"recording_enabled": True, "chat_enabled": True, "nested": {"x": [1, 2]}}


async def test_apps_create_returns_app(make_user):
    user = await make_user()
    response = await user.client.post(
        "/api/apps",
        json={
            "name": "My Gaming App",
            "description": "For gamers",
            "settings": SETTINGS,
        },
        headers=user.headers,
    )
    body = await response.json()
    assert response.status == 201
    assert set(body) == {
        "id",
        "name",
        "description",
        "user_id",
        "settings",
        "created_at",
    }
    assert body["id"].startswith("app_")
    assert body["name"] == "My Gaming App"
    assert body["description"] == "For gamers"
    assert body["user_id"] == user.id
    assert body["settings"] == SETTINGS
    assert TIMESTAMP.fullmatch(body["created_at"])


async def test_apps_create_defaults(make_user):
    user = await make_user()
    app = await user.create_app("Minimal")
    assert app["description"] == ""
    assert app["settings"] == {}


async def test_apps_create_keeps_settings_key_order(make_user):
    user = await make_user()
    settings = {"z": 1, "a": 2, "m": {"y": 1, "b": 2}}
    app = await user.create_app(settings=settings)
    response = await user.client.get(f"/api/apps/{app['id']}", headers=user.headers)
    text = await response.text()
    assert text.index('"z"') < text.index('"a"') < text.index('"m"')


async def test_apps_create_null_description_stored_empty(make_user):
    user = await make_user()
    app = await user.create_app(description=None)
    assert app["description"] == ""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "name: field required"),
        ({"name": None}, "name: must be a string"),
        ({"name": 5}, "name: must be a string"),
        ({"name": "   "}, "name: must not be empty"),
        ({"name": "n" * 201}, "name: must be at most 200 characters"),
        ({"name": "ok", "description": 1}, "description: must be a string"),
        ({"name": "ok", "description": "d" * 5001}, "description: must be at most"),
        ({"name": "ok", "settings": None}, "settings: must be a JSON object"),
        ({"name": "ok", "settings": [1]}, "settings: must be a JSON object"),
        ({"name": "ok", "settings": "x"}, "settings: must be a JSON object"),
        ({"name": "ok", "colour": "red"}, "colour: unknown field"),
    ],
)
async def test_apps_create_invalid_rejected(make_user, body, expected):
    user = await make_user()
    response = await user.client.post("/api/apps", json=body, headers=user.headers)
    detail = (await response.json())["detail"]
    assert response.status == 400
    assert detail.startswith(expected)


async def test_apps_create_strips_name(make_user):
    user = await make_user()
    app = await user.create_app("  Padded  ")
    assert app["name"] == "Padded"


async def test_apps_require_token(api_client):
    for method, path in [
        ("GET", "/api/apps"),
        ("POST", "/api/apps"),
        ("GET", "/api/apps/app_x"),
        ("PUT", "/api/apps/app_x"),
        ("DELETE", "/api/apps/app_x"),
    ]:
        response = await api_client.request(method, path, json={"name": "x"})
        assert response.status == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_apps_list_returns_own_apps(make_user):
    alice = await make_user()
    bob = await make_user()
    first = await alice.create_app("First", settings={"a": 1})
    second = await alice.create_app("Second")
    await bob.create_app("Bob's")
    response = await alice.client.get("/api/apps", headers=alice.headers)
    body = await response.json()
    assert response.status == 200
    assert [app["id"] for app in body] == [second["id"], first["id"]]
    assert body[1]["settings"] == {"a": 1}
    assert body[1]["created_at"] == first["created_at"]


async def test_apps_list_pagination(make_user):
    user = await make_user()
    created = [await user.create_app(f"App {index}") for index in range(5)]
    newest_first = [app["id"] for app in reversed(created)]
    response = await user.client.get(
        "/api/apps", params={"limit": "2", "skip": "1"}, headers=user.headers
    )
    body = await response.json()
    assert response.status == 200
    assert [app["id"] for app in body] == newest_first[1:3]


@pytest.mark.parametrize(
    ("params", "name"),
    [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"skip": "-1"}, "skip")],
)
async def test_apps_list_bad_pagination_rejected(make_user, params, name):
    user = await make_user()
    response = await user.client.get("/api/apps", params=params, headers=user.headers)
    detail = (await response.json())["detail"]
    assert response.status == 400
    assert detail.startswith(f"{name}: ")


async def test_apps_get_returns_app(make_user):
    user = await make_user()
    app = await user.create_app(settings=SETTINGS)
    response = await user.client.get(f"/api/apps/{app['id']}", headers=user.headers)
    assert response.status == 200
    assert await response.json() == app


async def test_apps_get_unknown_not_found(make_user):
    user = await make_user()
    response = await user.client.get("/api/apps/app_missing", headers=user.headers)
    body = await response.json()
    assert response.status == 404
    assert body == {"detail": "app not found: app_missing", "status_code": 404}


async def test_apps_update_changes_given_fields(make_user):
    user = await make_user()
    app = await user.create_app("Old", description="Keep me", settings={"a": 1})
    response = await user.client.put(
        f"/api/apps/{app['id']}",
        json={"name": "New", "settings": {"b": 2}},
        headers=user.headers,
    )
    body = await response.json()
    assert response.status == 200
    assert body["name"] == "New"
    assert body["description"] == "Keep me"
    assert body["settings"] == {"b": 2}
    assert body["created_at"] == app["created_at"]


async def test_apps_update_persists(make_user):
    user = await make_user()
    app = await user.create_app()
    await user.client.put(
        f"/api/apps/{app['id']}", json={"description": "Later"}, headers=user.headers
    )
    response = await user.client.get(f"/api/apps/{app['id']}", headers=user.headers)
    assert (await response.json())["description"] == "Later"


async def test_apps_update_empty_body_unchanged(make_user):
    user = await make_user()
    app = await user.create_app()
    response = await user.client.put(
        f"/api/apps/{app['id']}", json={}, headers=user.headers
    )
    assert response.status == 200
    assert await response.json() == app


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": ""}, "name: must not be empty"),
        ({"settings": 3}, "settings: must be a JSON object"),
        ({"user_id": "user_other"}, "user_id: unknown field"),
    ],
)
async def test_apps_update_invalid_rejected(make_user, body, expected):
    user = await make_user()
    app = await user.create_app()
    response = await user.client.put(
        f"/api/apps/{app['id']}", json=body, headers=user.headers
    )
    detail = (await response.json())["detail"]
    assert response.status == 400
    assert detail.startswith(expected)


async def test_apps_update_unknown_not_found(make_user):
    user = await make_user()
    response = await user.client.put(
        "/api/apps/app_missing", json={"name": "x"}, headers=user.headers
    )
    assert response.status == 404


async def test_apps_delete_removes_app_and_streams(make_user, database):
    user = await make_user()
    app = await user.create_app()
    stream = await user.create_stream(app["id"])
    response = await user.client.delete(f"/api/apps/{app['id']}", headers=user.headers)
    assert response.status == 204
    assert await response.read() == b""
    response = await user.client.get(f"/api/apps/{app['id']}", headers=user.headers)
    assert response.status == 404
    assert await stream_store.get_stream(database, stream["id"]) is None
    assert await stream_store.get_stream_by_key(database, stream["stream_key"]) is None


async def test_apps_delete_kicks_live_publishers(make_user, start_publishing, hub):
    user = await make_user()
    app = await user.create_app()
    live = await user.create_stream(app["id"], "Live")
    idle = await user.create_stream(app["id"], "Idle")
    disconnects = await start_publishing(live["id"])
    response = await user.client.delete(f"/api/apps/{app['id']}", headers=user.headers)
    assert response.status == 204
    assert disconnects == [f"app {app['id']} deleted"]
    assert not hub.is_live(live["id"])
    assert not hub.is_live(idle["id"])


async def test_apps_delete_unknown_not_found(make_user):
    user = await make_user()
    response = await user.client.delete("/api/apps/app_missing", headers=user.headers)
    assert response.status == 404


async def test_apps_other_user_not_found(make_user, start_publishing, hub):
    alice = await make_user()
    bob = await make_user()
    app = await alice.create_app()
    stream = await alice.create_stream(app["id"])
    disconnects = await start_publishing(stream["id"])
    path = f"/api/apps/{app['id']}"

    get = await bob.client.get(path, headers=bob.headers)
    put = await bob.client.put(path, json={"name": "Mine"}, headers=bob.headers)
    delete = await bob.client.delete(path, headers=bob.headers)
    still_there = await alice.client.get(path, headers=alice.headers)
    assert get.status == 404
    assert put.status == 404
    assert delete.status == 404
    assert disconnects == []
    assert hub.is_live(stream["id"])
    assert still_there.status == 200
    assert (await still_there.json())["name"] == app["name"]


async def test_apps_other_user_list_empty(make_user):
    alice = await make_user()
    bob = await make_user()
    await alice.create_app()
    response = await bob.client.get("/api/apps", headers=bob.headers)
    assert await response.json() == []
