"""Tests for /api/streams: CRUD, status, key reset, public URLs and isolation."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

import pytest

from realcast_box.api.streams import split_host_header, url_host
from realcast_box.store import streams as stream_store
from realcast_box.store.ids import utc_now

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
STREAM_FIELDS = {
    "id",
    "app_id",
    "title",
    "description",
    "settings",
    "stream_key",
    "rtmp_url",
    "hls_url",
    "status",
    "created_at",
    "started_at",
    "ended_at",
}


@pytest.fixture
async def owner(make_user):
    user = await make_user("owner@example.com")
    user.app = await user.create_app("Owner's app")
    return user


async def test_streams_create_returns_stream(owner):
    client = owner.client
    response = await client.post(
        "/api/streams",
        json={
            "app_id": owner.app["id"],
            "title": "Epic Gaming Session",
            "description": "Playing",
            "settings": {"recording": True, "profile": {"id": "profile_123"}},
        },
        headers=owner.headers,
    )
    body = await response.json()
    host = f"{client.server.host}:{client.server.port}"
    assert response.status == 201
    assert set(body) == STREAM_FIELDS
    assert body["id"].startswith("stream_")
    assert body["app_id"] == owner.app["id"]
    assert body["title"] == "Epic Gaming Session"
    assert body["description"] == "Playing"
    assert body["settings"] == {"recording": True, "profile": {"id": "profile_123"}}
    assert body["rtmp_url"] == f"rtmp://{client.server.host}:1935/live"
    assert body["hls_url"] == f"http://{host}/hls/{body['id']}/index.m3u8"
    assert body["status"] == "created"
    assert TIMESTAMP.fullmatch(body["created_at"])
    assert body["started_at"] is None
    assert body["ended_at"] is None


async def test_streams_create_key_format(owner):
    stream = await owner.create_stream(owner.app["id"])
    pattern = rf"{owner.app['id']}_{stream['id']}_sk_[A-Za-z0-9_-]{{24,}}"
    assert re.fullmatch(pattern, stream["stream_key"])


async def test_streams_create_keys_differ(owner):
    first = await owner.create_stream(owner.app["id"])
    second = await owner.create_stream(owner.app["id"])
    assert first["stream_key"] != second["stream_key"]
    assert first["id"] != second["id"]


async def test_streams_create_key_found_by_store(owner, database):
    stream = await owner.create_stream(owner.app["id"])
    found = await stream_store.get_stream_by_key(database, stream["stream_key"])
    assert found is not None
    assert found["id"] == stream["id"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"title": "x"}, "app_id: field required"),
        ({"app_id": 7, "title": "x"}, "app_id: must be a string"),
        ({"app_id": "APP"}, "title: field required"),
        ({"app_id": "APP", "title": ""}, "title: must not be empty"),
        ({"app_id": "APP", "title": "t" * 201}, "title: must be at most 200"),
        ({"app_id": "APP", "title": "x", "settings": 1}, "settings: must be a JSON"),
        ({"app_id": "APP", "title": "x", "stream_key": "k"}, "stream_key: unknown"),
    ],
)
async def test_streams_create_invalid_rejected(owner, body, expected):
    body = {
        key: owner.app["id"] if value == "APP" else value for key, value in body.items()
    }
    response = await owner.client.post("/api/streams", json=body, headers=owner.headers)
    detail = (await response.json())["detail"]
    assert response.status == 400
    assert detail.startswith(expected)


async def test_streams_create_unknown_app_not_found(owner):
    response = await owner.client.post(
        "/api/streams",
        json={"app_id": "app_missing", "title": "x"},
        headers=owner.headers,
    )
    body = await response.json()
    assert response.status == 404
    assert body["detail"] == "app not found: app_missing"


async def test_streams_create_in_other_users_app_not_found(owner, make_user):
    intruder = await make_user()
    response = await intruder.client.post(
        "/api/streams",
        json={"app_id": owner.app["id"], "title": "Sneaky"},
        headers=intruder.headers,
    )
    listing = await owner.client.get("/api/streams", headers=owner.headers)
    assert response.status == 404
    assert await listing.json() == []


async def test_streams_require_token(api_client):
    for method, path in [
        ("GET", "/api/streams"),
        ("POST", "/api/streams"),
        ("GET", "/api/streams/stream_x"),
        ("PUT", "/api/streams/stream_x"),
        ("DELETE", "/api/streams/stream_x"),
        ("GET", "/api/streams/stream_x/status"),
        ("POST", "/api/streams/stream_x/reset-key"),
    ]:
        response = await api_client.request(method, path)
        assert response.status == 401, (method, path)


async def test_streams_public_host_used_in_urls(
    aiohttp_client, build_app, config, database, hub, make_user
):
    config = dataclasses.replace(
        config, public_host="box.example.com", http_port=8088, rtmp_port=1936
    )
    client = await aiohttp_client(build_app(config, database, hub))
    user = await make_user(client=client)
    app = await user.create_app()
    stream = await user.create_stream(app["id"])
    assert stream["rtmp_url"] == "rtmp://box.example.com:1936/live"
    assert stream["hls_url"] == (
        f"http://box.example.com:8088/hls/{stream['id']}/index.m3u8"
    )


async def test_streams_public_host_ipv6_bracketed(
    aiohttp_client, build_app, config, database, hub, make_user
):
    config = dataclasses.replace(config, public_host="fd00::5")
    client = await aiohttp_client(build_app(config, database, hub))
    user = await make_user(client=client)
    app = await user.create_app()
    stream = await user.create_stream(app["id"])
    assert stream["rtmp_url"] == "rtmp://[fd00::5]:1935/live"


@pytest.mark.parametrize(
    ("host_header", "rtmp_url", "hls_prefix"),
    [
        ("[::1]:9000", "rtmp://[::1]:1935/live", "http://[::1]:9000/hls/"),
        ("box.local", "rtmp://box.local:1935/live", "http://box.local:8080/hls/"),
        ("10.0.0.7:80", "rtmp://10.0.0.7:1935/live", "http://10.0.0.7:80/hls/"),
    ],
)
async def test_streams_urls_follow_host_header(
    owner, host_header, rtmp_url, hls_prefix
):
    stream = await owner.create_stream(owner.app["id"])
    response = await owner.client.get(
        f"/api/streams/{stream['id']}",
        headers={**owner.headers, "Host": host_header},
    )
    body = await response.json()
    assert body["rtmp_url"] == rtmp_url
    assert body["hls_url"] == f"{hls_prefix}{stream['id']}/index.m3u8"


async def test_streams_urls_ignore_unsafe_host_header(owner):
    stream = await owner.create_stream(owner.app["id"])
    response = await owner.client.get(
        f"/api/streams/{stream['id']}",
        headers={**owner.headers, "Host": "evil.example/x@y:9999"},
    )
    body = await response.json()
    assert body["rtmp_url"] == "rtmp://127.0.0.1:1935/live"
    assert body["hls_url"].startswith("http://127.0.0.1:8080/hls/")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.com", ("example.com", None)),
        ("example.com:8080", ("example.com", 8080)),
        ("[::1]", ("[::1]", None)),
        ("[::1]:8443", ("[::1]", 8443)),
        ("[fe80::1%eth0]:80", ("[fe80::1%eth0]", 80)),
        ("::1", ("[::1]", None)),
        ("example.com:http", ("example.com", None)),
        ("example.com:0", ("example.com", None)),
        ("example.com:\u00b2", ("example.com", None)),
        ("example.com:70000", ("example.com", None)),
        ("[::1", (None, None)),
        ("[::1]x", (None, None)),
        ("a/b:80", (None, None)),
        ("user@example.com", (None, None)),
        ("", (None, None)),
    ],
)
def test_split_host_header_cases(value, expected):
    assert split_host_header(value) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [("box", "box"), ("10.0.0.1", "10.0.0.1"), ("::1", "[::1]"), ("[::1]", "[::1]")],
)
def test_url_host_brackets_ipv6(host, expected):
    assert url_host(host) == expected


async def test_streams_list_all_apps(owner):
    other_app = await owner.create_app("Second app")
    first = await owner.create_stream(owner.app["id"], "First")
    second = await owner.create_stream(other_app["id"], "Second")
    response = await owner.client.get("/api/streams", headers=owner.headers)
    body = await response.json()
    assert response.status == 200
    assert [stream["id"] for stream in body] == [second["id"], first["id"]]
    assert set(body[0]) == STREAM_FIELDS


async def test_streams_list_filtered_by_app(owner):
    other_app = await owner.create_app("Second app")
    first = await owner.create_stream(owner.app["id"], "First")
    await owner.create_stream(other_app["id"], "Second")
    response = await owner.client.get(
        "/api/streams", params={"app_id": owner.app["id"]}, headers=owner.headers
    )
    body = await response.json()
    assert [stream["id"] for stream in body] == [first["id"]]


async def test_streams_list_pagination(owner):
    created = [await owner.create_stream(owner.app["id"], f"S{i}") for i in range(7)]
    newest_first = [stream["id"] for stream in reversed(created)]
    pages = []
    for skip in (0, 3, 6, 9):
        response = await owner.client.get(
            "/api/streams",
            params={"limit": "3", "skip": str(skip)},
            headers=owner.headers,
        )
        pages.append([stream["id"] for stream in await response.json()])
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:], []]


async def test_streams_list_limit_bounds_accepted(owner):
    await owner.create_stream(owner.app["id"])
    for limit in ("1", "100"):
        response = await owner.client.get(
            "/api/streams", params={"limit": limit}, headers=owner.headers
        )
        assert response.status == 200, limit


async def test_streams_list_default_limit_50(owner, database):
    for index in range(51):
        await stream_store.create_stream(database, owner.app["id"], f"S{index}", "", {})
    response = await owner.client.get("/api/streams", headers=owner.headers)
    assert len(await response.json()) == 50


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"limit": "0"}, "limit: must be an integer from 1 to 100, got '0'"),
        ({"limit": "101"}, "limit: must be an integer from 1 to 100"),
        ({"limit": "abc"}, "limit: must be an integer"),
        ({"limit": "1.5"}, "limit: must be an integer"),
        ({"limit": ""}, "limit: must be an integer"),
        ({"limit": "9" * 40}, "limit: must be an integer"),
        ({"skip": "-1"}, "skip: must be an integer from 0"),
        ({"skip": "x"}, "skip: must be an integer"),
        ({"app_id": ""}, "app_id: must not be empty"),
    ],
)
async def test_streams_list_bad_query_rejected(owner, params, expected):
    response = await owner.client.get(
        "/api/streams", params=params, headers=owner.headers
    )
    body = await response.json()
    assert response.status == 400
    assert body["detail"].startswith(expected)


async def test_streams_list_other_users_app_not_found(owner, make_user):
    intruder = await make_user()
    response = await intruder.client.get(
        "/api/streams", params={"app_id": owner.app["id"]}, headers=intruder.headers
    )
    assert response.status == 404


async def test_streams_list_excludes_other_users(owner, make_user):
    await owner.create_stream(owner.app["id"])
    intruder = await make_user()
    response = await intruder.client.get("/api/streams", headers=intruder.headers)
    assert await response.json() == []


async def test_streams_get_returns_stream(owner):
    stream = await owner.create_stream(owner.app["id"], settings={"a": [1]})
    response = await owner.client.get(
        f"/api/streams/{stream['id']}", headers=owner.headers
    )
    assert response.status == 200
    assert await response.json() == stream


async def test_streams_get_unknown_not_found(owner):
    response = await owner.client.get(
        "/api/streams/stream_missing", headers=owner.headers
    )
    body = await response.json()
    assert response.status == 404
    assert body == {"detail": "stream not found: stream_missing", "status_code": 404}


async def test_streams_update_changes_given_fields(owner):
    stream = await owner.create_stream(owner.app["id"], "Old", description="Keep")
    response = await owner.client.put(
        f"/api/streams/{stream['id']}",
        json={"title": "New", "settings": {"recording": False}},
        headers=owner.headers,
    )
    body = await response.json()
    assert response.status == 200
    assert body["title"] == "New"
    assert body["description"] == "Keep"
    assert body["settings"] == {"recording": False}
    assert body["stream_key"] == stream["stream_key"]


async def test_streams_update_persists(owner):
    stream = await owner.create_stream(owner.app["id"])
    await owner.client.put(
        f"/api/streams/{stream['id']}", json={"description": "D"}, headers=owner.headers
    )
    response = await owner.client.get(
        f"/api/streams/{stream['id']}", headers=owner.headers
    )
    assert (await response.json())["description"] == "D"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"title": None}, "title: must be a string"),
        ({"settings": []}, "settings: must be a JSON object"),
        ({"app_id": "app_other"}, "app_id: unknown field"),
        ({"status": "live"}, "status: unknown field"),
    ],
)
async def test_streams_update_invalid_rejected(owner, body, expected):
    stream = await owner.create_stream(owner.app["id"])
    response = await owner.client.put(
        f"/api/streams/{stream['id']}", json=body, headers=owner.headers
    )
    detail = (await response.json())["detail"]
    assert response.status == 400
    assert detail.startswith(expected)


async def test_streams_update_unknown_not_found(owner):
    response = await owner.client.put(
        "/api/streams/stream_missing", json={"title": "x"}, headers=owner.headers
    )
    assert response.status == 404


async def test_streams_delete_removes_stream(owner, database):
    stream = await owner.create_stream(owner.app["id"])
    response = await owner.client.delete(
        f"/api/streams/{stream['id']}", headers=owner.headers
    )
    again = await owner.client.get(
        f"/api/streams/{stream['id']}", headers=owner.headers
    )
    assert response.status == 204
    assert again.status == 404
    assert await stream_store.get_stream_by_key(database, stream["stream_key"]) is None


async def test_streams_delete_kicks_live_publisher(owner, start_publishing, hub):
    stream = await owner.create_stream(owner.app["id"])
    disconnects = await start_publishing(stream["id"])
    response = await owner.client.delete(
        f"/api/streams/{stream['id']}", headers=owner.headers
    )
    assert response.status == 204
    assert disconnects == ["stream deleted"]
    assert not hub.is_live(stream["id"])


async def test_streams_delete_survives_failed_kick(owner, hub, database, caplog):
    async def failing_disconnect(reason):
        raise RuntimeError("publisher connection already gone")

    stream = await owner.create_stream(owner.app["id"])
    row = await stream_store.get_stream(database, stream["id"])
    await hub.start(row, "127.0.0.1:50000", failing_disconnect)
    response = await owner.client.delete(
        f"/api/streams/{stream['id']}", headers=owner.headers
    )
    assert response.status == 204
    assert "failed to disconnect publisher" in caplog.text


async def test_streams_status_created(owner):
    stream = await owner.create_stream(owner.app["id"])
    response = await owner.client.get(
        f"/api/streams/{stream['id']}/status", headers=owner.headers
    )
    body = await response.json()
    assert response.status == 200
    assert body == {
        "stream_id": stream["id"],
        "status": "created",
        "viewer_count": 0,
        "peak_viewers": 0,
        "total_views": 0,
        "started_at": None,
        "duration_seconds": 0,
        "ingest": None,
        "ingest_warnings": [],
        "renditions": [],
    }


async def test_streams_status_live_counts_up(owner, database):
    stream = await owner.create_stream(owner.app["id"])
    started_at = utc_now() - timedelta(seconds=30)
    await stream_store.mark_stream_live(database, stream["id"], started_at)
    response = await owner.client.get(
        f"/api/streams/{stream['id']}/status", headers=owner.headers
    )
    body = await response.json()
    assert body["status"] == "live"
    assert TIMESTAMP.fullmatch(body["started_at"])
    assert body["duration_seconds"] >= 30


async def test_streams_status_offline_last_session(owner, database):
    stream = await owner.create_stream(owner.app["id"])
    started_at = utc_now() - timedelta(hours=2)
    await stream_store.mark_stream_live(database, stream["id"], started_at)
    await stream_store.mark_stream_offline(
        database, stream["id"], started_at + timedelta(seconds=600)
    )
    response = await owner.client.get(
        f"/api/streams/{stream['id']}/status", headers=owner.headers
    )
    body = await response.json()
    assert body["status"] == "offline"
    assert body["duration_seconds"] == 600


async def test_streams_object_shows_session_times(owner, database):
    stream = await owner.create_stream(owner.app["id"])
    started_at = utc_now() - timedelta(hours=1)
    await stream_store.mark_stream_live(database, stream["id"], started_at)
    await stream_store.mark_stream_offline(
        database, stream["id"], started_at + timedelta(seconds=5)
    )
    response = await owner.client.get(
        f"/api/streams/{stream['id']}", headers=owner.headers
    )
    body = await response.json()
    assert body["status"] == "offline"
    assert TIMESTAMP.fullmatch(body["started_at"])
    assert TIMESTAMP.fullmatch(body["ended_at"])


async def test_streams_reset_key_replaces_key(owner, database):
    stream = await owner.create_stream(owner.app["id"])
    response = await owner.client.post(
        f"/api/streams/{stream['id']}/reset-key", headers=owner.headers
    )
    body = await response.json()
    assert response.status == 200
    assert set(body) == STREAM_FIELDS
    assert body["stream_key"] != stream["stream_key"]
    assert body["stream_key"].startswith(f"{owner.app['id']}_{stream['id']}_sk_")
    assert await stream_store.get_stream_by_key(database, stream["stream_key"]) is None
    found = await stream_store.get_stream_by_key(database, body["stream_key"])
    assert found is not None
    assert found["id"] == stream["id"]


async def test_streams_reset_key_kicks_live_publisher(owner, start_publishing):
    stream = await owner.create_stream(owner.app["id"])
    disconnects = await start_publishing(stream["id"])
    await owner.client.post(
        f"/api/streams/{stream['id']}/reset-key", headers=owner.headers
    )
    status = await owner.client.get(
        f"/api/streams/{stream['id']}/status", headers=owner.headers
    )
    assert disconnects == ["stream key reset"]
    assert (await status.json())["status"] == "offline"


async def test_streams_reset_key_other_stream_not_kicked(owner, start_publishing):
    other = await owner.create_stream(owner.app["id"], "Other")
    disconnects = await start_publishing(other["id"])
    stream = await owner.create_stream(owner.app["id"])
    await owner.client.post(
        f"/api/streams/{stream['id']}/reset-key", headers=owner.headers
    )
    assert disconnects == []


async def test_streams_status_live_through_hub(owner, start_publishing):
    stream = await owner.create_stream(owner.app["id"])
    await start_publishing(stream["id"])
    response = await owner.client.get(
        f"/api/streams/{stream['id']}/status", headers=owner.headers
    )
    body = await response.json()
    assert body["status"] == "live"
    assert TIMESTAMP.fullmatch(body["started_at"])
    assert body["duration_seconds"] >= 0


async def test_streams_reset_key_unknown_not_found(owner):
    response = await owner.client.post(
        "/api/streams/stream_missing/reset-key", headers=owner.headers
    )
    assert response.status == 404


async def test_streams_other_user_not_found(
    owner, make_user, start_publishing, hub, database
):
    stream = await owner.create_stream(owner.app["id"])
    disconnects = await start_publishing(stream["id"])
    intruder = await make_user()
    path = f"/api/streams/{stream['id']}"
    headers = intruder.headers
    client = intruder.client

    responses = {
        "get": await client.get(path, headers=headers),
        "put": await client.put(path, json={"title": "Mine"}, headers=headers),
        "delete": await client.delete(path, headers=headers),
        "status": await client.get(f"{path}/status", headers=headers),
        "reset-key": await client.post(f"{path}/reset-key", headers=headers),
    }
    for name, response in responses.items():
        assert response.status == 404, name
        assert (await response.json())["detail"] == f"stream not found: {stream['id']}"
    unchanged = await stream_store.get_stream(database, stream["id"])
    assert unchanged is not None
    assert unchanged["title"] == stream["title"]
    assert unchanged["stream_key"] == stream["stream_key"]
    assert disconnects == []
    assert hub.is_live(stream["id"])
