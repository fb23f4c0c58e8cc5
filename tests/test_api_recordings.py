"""The /api/recordings routes: ownership, scopes, validation and filters."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer

from realcast_box.api.recordings import parse_allow_list
from realcast_box.app import create_app
from realcast_box.errors import StartupError
from tests.conftest import key_auth, make_config


async def test_recordings_other_user_gets_404(make_user, start_publishing):
    owner = await make_user()
    other = await make_user()
    app = await owner.create_app()
    stream = await owner.create_stream(app["id"])
    await start_publishing(stream["id"])
    client = owner.client
    response = await client.post(
        "/api/recordings/start",
        json={"stream_id": stream["id"]},
        headers=owner.headers,
    )
    assert response.status == 201, await response.text()
    recording = await response.json()

    item = f"/api/recordings/{recording['id']}"
    for method, path in (
        ("GET", item),
        ("PUT", item),
        ("DELETE", item),
        ("POST", f"/api/recordings/stop/{stream['id']}"),
    ):
        response = await client.request(method, path, json={}, headers=other.headers)
        assert response.status == 404, (method, path)
    response = await client.post(
        "/api/recordings/start",
        json={"stream_id": stream["id"]},
        headers=other.headers,
    )
    assert response.status == 404
    response = await client.get("/api/recordings/", headers=other.headers)
    assert await response.json() == []
    assert response.headers["X-Total-Count"] == "0"


async def test_recordings_api_key_scopes(make_user, start_publishing):
    user = await make_user()
    app = await user.create_app()
    stream = await user.create_stream(app["id"])
    await start_publishing(stream["id"])
    reader = key_auth(await user.create_api_key(app["id"], ["recordings:read"]))
    writer = key_auth(await user.create_api_key(app["id"], ["recordings:write"]))
    client = user.client
    body = {"stream_id": stream["id"]}

    response = await client.post("/api/recordings/start", json=body, headers=reader)
    assert response.status == 403
    assert "recordings:write" in (await response.json())["detail"]
    response = await client.post("/api/recordings/start", json=body, headers=writer)
    assert response.status == 201
    response = await client.get("/api/recordings", headers=writer)
    assert response.status == 403
    response = await client.get("/api/recordings", headers=reader)
    assert response.status == 200
    assert len(await response.json()) == 1


async def test_recordings_start_checks_body(make_user, start_publishing):
    user = await make_user()
    app = await user.create_app()
    other_app = await user.create_app("Other")
    stream = await user.create_stream(app["id"])
    client = user.client

    response = await client.post(
        "/api/recordings/start", json={"stream_id": stream["id"]}, headers=user.headers
    )
    assert response.status == 409
    assert "is not live" in (await response.json())["detail"]
    response = await client.post(
        "/api/recordings/start",
        json={"stream_id": stream["id"], "app_id": other_app["id"]},
        headers=user.headers,
    )
    assert response.status == 400
    assert (await response.json())["detail"].startswith("app_id:")
    response = await client.post(
        "/api/recordings/start", json={"title": "x"}, headers=user.headers
    )
    assert response.status == 400
    assert (await response.json())["detail"] == "stream_id: field required"
    response = await client.post(
        "/api/recordings/start",
        json={"stream_id": stream["id"], "extra": 1},
        headers=user.headers,
    )
    assert response.status == 400


async def test_recordings_list_filters_and_update(make_user, start_publishing):
    user = await make_user()
    app = await user.create_app()
    first = await user.create_stream(app["id"], "First")
    second = await user.create_stream(app["id"], "Second")
    client = user.client
    ids = {}
    for stream in (first, second):
        await start_publishing(stream["id"])
        response = await client.post(
            "/api/recordings/start",
            json={"stream_id": stream["id"], "description": "d"},
            headers=user.headers,
        )
        assert response.status == 201
        ids[stream["id"]] = (await response.json())["id"]

    response = await client.get(
        f"/api/recordings/?stream_id={first['id']}", headers=user.headers
    )
    listed = await response.json()
    assert [item["id"] for item in listed] == [ids[first["id"]]]
    assert listed[0]["title"] == "First"
    response = await client.get(
        f"/api/recordings?app_id={app['id']}&limit=1&skip=1", headers=user.headers
    )
    assert [item["id"] for item in await response.json()] == [ids[first["id"]]]
    assert response.headers["X-Total-Count"] == "2"

    item = f"/api/recordings/{ids[second['id']]}"
    response = await client.put(
        item, json={"title": "  Renamed  ", "description": None}, headers=user.headers
    )
    assert response.status == 200
    updated = await response.json()
    assert updated["title"] == "Renamed"
    assert updated["description"] == ""
    assert updated["status"] == "recording"


def test_recordings_allow_list_parsing():
    hosts = parse_allow_list(" CDN.example.com, 10.0.0.5 ,[::1],, ")
    assert hosts == frozenset({"cdn.example.com", "10.0.0.5", "::1"})
    assert parse_allow_list("") == frozenset()
    for bad in ("http://cdn.example.com", "cdn.example.com:1935", "a b", "-x"):
        with pytest.raises(ValueError, match="not a host name or IP address"):
            parse_allow_list(bad)


async def test_recordings_bad_allow_list_fails_start(tmp_path):
    config = make_config(tmp_path, recordings_pull_allow_list="rtmp://cdn:1935")
    app = create_app(config)
    with pytest.raises(StartupError, match="recordings_pull_allow_list"):
        async with TestServer(app):
            pass
