"""Tests for /api/transcoding-profiles, settings.transcoding_profile_id and encoders."""

from __future__ import annotations

import re

import pytest

from realcast_box.api import profiles
from realcast_box.api.system import ENCODERS
from realcast_box.media.encoders import EncoderStatus
from realcast_box.store import api_keys as key_store
from tests.conftest import key_auth

PROFILES = "/api/transcoding-profiles"
PROFILE_FIELDS = {
    "id",
    "app_id",
    "name",
    "description",
    "qualities",
    "audio_bitrate",
    "enable_gpu_acceleration",
    "created_at",
}
LADDER = [
    {"name": "1080p60", "width": 1920, "height": 1080, "bitrate": 6000, "fps": 60},
    {"name": "720p60", "width": 1280, "height": 720, "bitrate": 3500, "fps": 60},
    {"name": "480p30", "width": 854, "height": 480, "bitrate": 1200, "fps": 30},
]
ALL_SCOPES = list(key_store.SCOPES)


def profile_body(app_id: str, **fields) -> dict:
    return {
        "app_id": app_id,
        "name": "HD Gaming Profile",
        "description": "Optimized for 60fps gaming",
        "qualities": LADDER,
        "audio_bitrate": 192,
        "enable_gpu_acceleration": True,
        **fields,
    }


@pytest.fixture
async def owner(make_user):
    user = await make_user("owner@example.com")
    user.app = await user.create_app("Owner's app")
    return user


async def create_profile(user, app_id: str, **fields) -> dict:
    response = await user.client.post(
        PROFILES, json=profile_body(app_id, **fields), headers=user.headers
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def detail_of(response) -> str:
    return (await response.json())["detail"]


# --- CRUD --------------------------------------------------------------------


async def test_profiles_create_returns_profile(owner):
    response = await owner.client.post(
        PROFILES, json=profile_body(owner.app["id"]), headers=owner.headers
    )
    body = await response.json()
    assert response.status == 201
    assert set(body) == PROFILE_FIELDS
    assert re.fullmatch(r"profile_[0-9a-f]{16}", body["id"])
    assert body["app_id"] == owner.app["id"]
    assert body["name"] == "HD Gaming Profile"
    assert body["qualities"] == LADDER
    assert body["audio_bitrate"] == 192
    assert body["enable_gpu_acceleration"] is True


async def test_profiles_create_defaults(owner):
    body = {"app_id": owner.app["id"], "name": "Minimal", "qualities": LADDER[:1]}
    response = await owner.client.post(PROFILES, json=body, headers=owner.headers)
    profile = await response.json()
    assert response.status == 201
    assert profile["description"] == ""
    assert profile["audio_bitrate"] == profiles.DEFAULT_AUDIO_BITRATE
    assert profile["enable_gpu_acceleration"] is False


async def test_profiles_create_keeps_fractional_fps(owner):
    quality = {**LADDER[0], "fps": 29.97}
    profile = await create_profile(owner, owner.app["id"], qualities=[quality])
    assert profile["qualities"][0]["fps"] == 29.97


async def test_profiles_get_returns_created(owner):
    created = await create_profile(owner, owner.app["id"])
    response = await owner.client.get(
        f"{PROFILES}/{created['id']}", headers=owner.headers
    )
    assert response.status == 200
    assert await response.json() == created


async def test_profiles_list_filters_by_app(owner):
    other_app = await owner.create_app("Second app")
    first = await create_profile(owner, owner.app["id"])
    await create_profile(owner, other_app["id"])
    response = await owner.client.get(
        f"{PROFILES}?app_id={owner.app['id']}", headers=owner.headers
    )
    body = await response.json()
    assert response.status == 200
    assert [profile["id"] for profile in body] == [first["id"]]
    assert response.headers["X-Total-Count"] == "1"


async def test_profiles_list_all_apps_paginated(owner):
    other_app = await owner.create_app("Second app")
    await create_profile(owner, owner.app["id"])
    await create_profile(owner, other_app["id"])
    response = await owner.client.get(f"{PROFILES}?limit=1", headers=owner.headers)
    body = await response.json()
    assert len(body) == 1
    assert response.headers["X-Total-Count"] == "2"


async def test_profiles_update_changes_fields(owner):
    created = await create_profile(owner, owner.app["id"])
    changes = {"name": "Renamed", "qualities": LADDER[1:], "audio_bitrate": 96}
    response = await owner.client.put(
        f"{PROFILES}/{created['id']}", json=changes, headers=owner.headers
    )
    body = await response.json()
    assert response.status == 200
    assert body["name"] == "Renamed"
    assert body["qualities"] == LADDER[1:]
    assert body["audio_bitrate"] == 96
    assert body["enable_gpu_acceleration"] is True


async def test_profiles_update_rejects_app_id(owner):
    created = await create_profile(owner, owner.app["id"])
    response = await owner.client.put(
        f"{PROFILES}/{created['id']}",
        json={"app_id": owner.app["id"]},
        headers=owner.headers,
    )
    assert response.status == 400
    assert (await detail_of(response)).startswith("app_id: unknown field")


async def test_profiles_delete_removes(owner):
    created = await create_profile(owner, owner.app["id"])
    item = f"{PROFILES}/{created['id']}"
    response = await owner.client.delete(item, headers=owner.headers)
    assert response.status == 204
    response = await owner.client.get(item, headers=owner.headers)
    assert response.status == 404


async def test_profiles_deleted_with_app(owner):
    created = await create_profile(owner, owner.app["id"])
    await owner.client.delete(f"/api/apps/{owner.app['id']}", headers=owner.headers)
    response = await owner.client.get(
        f"{PROFILES}/{created['id']}", headers=owner.headers
    )
    assert response.status == 404


async def test_profiles_create_unknown_app_not_found(owner):
    response = await owner.client.post(
        PROFILES, json=profile_body("app_0"), headers=owner.headers
    )
    assert response.status == 404
    assert await detail_of(response) == "app not found: app_0"


# --- validation --------------------------------------------------------------


def with_quality(index: int, **changes) -> list[dict]:
    ladder = [dict(quality) for quality in LADDER]
    ladder[index].update(changes)
    return ladder


def without_key(index: int, key: str) -> list[dict]:
    ladder = [dict(quality) for quality in LADDER]
    del ladder[index][key]
    return ladder


INVALID_BODIES = [
    ({"qualities": []}, "qualities: must have from 1 to 8 qualities, got 0"),
    ({"qualities": LADDER * 3}, "qualities: must have from 1 to 8 qualities, got 9"),
    ({"qualities": "720p"}, "qualities: must be an array"),
    ({"qualities": [1]}, "qualities[0]: must be a JSON object"),
    ({"qualities": with_quality(1, width=1281)}, "qualities[1].width: must be even"),
    ({"qualities": with_quality(0, height=721)}, "qualities[0].height: must be even"),
    (
        {"qualities": with_quality(2, width=4098)},
        "qualities[2].width: must be from 16 to 4096",
    ),
    ({"qualities": with_quality(0, width=8)}, "qualities[0].width: must be from 16"),
    (
        {"qualities": with_quality(0, width=12.5)},
        "qualities[0].width: must be an integer",
    ),
    (
        {"qualities": with_quality(0, height="720")},
        "qualities[0].height: must be an integer",
    ),
    (
        {"qualities": with_quality(1, bitrate=99)},
        "qualities[1].bitrate: must be from 100 to 50000",
    ),
    (
        {"qualities": with_quality(1, bitrate=50001)},
        "qualities[1].bitrate: must be from 100 to 50000",
    ),
    ({"qualities": with_quality(0, fps=0)}, "qualities[0].fps: must be from 1 to 120"),
    ({"qualities": with_quality(0, fps=121)}, "qualities[0].fps: must be from 1"),
    ({"qualities": with_quality(0, fps=True)}, "qualities[0].fps: must be a number"),
    (
        {"qualities": with_quality(2, name="720p60")},
        "qualities[2].name: duplicate name '720p60'",
    ),
    ({"qualities": with_quality(0, name="")}, "qualities[0].name: must not be empty"),
    ({"qualities": with_quality(0, name="a/b")}, "qualities[0].name: invalid name"),
    (
        {"qualities": with_quality(0, name="Source")},
        "qualities[0].name: invalid name 'Source': 'source' names the passthrough",
    ),
    ({"qualities": with_quality(0, codec="h264")}, "qualities[0].codec: unknown"),
    ({"qualities": without_key(1, "fps")}, "qualities[1].fps: field required"),
    ({"audio_bitrate": 31}, "audio_bitrate: must be from 32 to 512"),
    ({"audio_bitrate": 513}, "audio_bitrate: must be from 32 to 512"),
    ({"audio_bitrate": "128"}, "audio_bitrate: must be an integer"),
    ({"enable_gpu_acceleration": "yes"}, "enable_gpu_acceleration: must be true"),
    ({"name": " "}, "name: must not be empty"),
    ({"description": 5}, "description: must be a string"),
]


@pytest.mark.parametrize(
    ("fields", "message"), INVALID_BODIES, ids=[m for _, m in INVALID_BODIES]
)
async def test_profiles_create_invalid_names_field(owner, fields, message):
    response = await owner.client.post(
        PROFILES, json=profile_body(owner.app["id"], **fields), headers=owner.headers
    )
    assert response.status == 400
    assert (await detail_of(response)).startswith(message)


@pytest.mark.parametrize(
    ("fields", "message"), INVALID_BODIES, ids=[m for _, m in INVALID_BODIES]
)
async def test_profiles_update_invalid_names_field(owner, fields, message):
    created = await create_profile(owner, owner.app["id"])
    response = await owner.client.put(
        f"{PROFILES}/{created['id']}", json=fields, headers=owner.headers
    )
    assert response.status == 400
    assert (await detail_of(response)).startswith(message)


@pytest.mark.parametrize("missing", ["app_id", "name", "qualities"])
async def test_profiles_create_missing_field(owner, missing):
    body = profile_body(owner.app["id"])
    del body[missing]
    response = await owner.client.post(PROFILES, json=body, headers=owner.headers)
    assert response.status == 400
    assert await detail_of(response) == f"{missing}: field required"


async def test_profiles_create_limits_accepted(owner):
    ladder = [
        {"name": f"q{index}", "width": 16, "height": 4096, "bitrate": 100, "fps": 1}
        for index in range(profiles.MAX_QUALITIES)
    ]
    ladder[0].update(width=4096, height=16, bitrate=50000, fps=120)
    profile = await create_profile(
        owner, owner.app["id"], qualities=ladder, audio_bitrate=512
    )
    assert profile["qualities"] == ladder


# --- isolation -----------------------------------------------------------------


async def test_profiles_other_user_not_found(owner, make_user):
    created = await create_profile(owner, owner.app["id"])
    other = await make_user()
    item = f"{PROFILES}/{created['id']}"
    for method, body in (("GET", None), ("PUT", {"name": "x"}), ("DELETE", None)):
        response = await other.client.request(
            method, item, json=body, headers=other.headers
        )
        assert response.status == 404, method


async def test_profiles_other_user_list_empty(owner, make_user):
    await create_profile(owner, owner.app["id"])
    other = await make_user()
    response = await other.client.get(PROFILES, headers=other.headers)
    assert await response.json() == []


async def test_profiles_other_user_app_not_found(owner, make_user):
    other = await make_user()
    response = await other.client.post(
        PROFILES, json=profile_body(owner.app["id"]), headers=other.headers
    )
    assert response.status == 404


async def test_profiles_key_other_app_not_found(owner):
    other_app = await owner.create_app("Other app")
    foreign = await create_profile(owner, other_app["id"])
    key = await owner.create_api_key(owner.app["id"], ALL_SCOPES)
    headers = key_auth(key)
    item = f"{PROFILES}/{foreign['id']}"
    requests = [
        ("GET", item, None),
        ("PUT", item, {"name": "x"}),
        ("DELETE", item, None),
        ("GET", f"{PROFILES}?app_id={other_app['id']}", None),
        ("POST", PROFILES, profile_body(other_app["id"])),
    ]
    for method, path, body in requests:
        response = await owner.client.request(method, path, json=body, headers=headers)
        assert response.status == 404, f"{method} {path}"


async def test_profiles_key_lists_own_app(owner):
    other_app = await owner.create_app("Other app")
    own = await create_profile(owner, owner.app["id"])
    await create_profile(owner, other_app["id"])
    key = await owner.create_api_key(owner.app["id"], ["profiles:read"])
    response = await owner.client.get(PROFILES, headers=key_auth(key))
    assert [profile["id"] for profile in await response.json()] == [own["id"]]


# --- scope matrix --------------------------------------------------------------

SCOPED_ENDPOINTS = [
    ("GET", PROFILES, None, "profiles:read"),
    ("GET", f"{PROFILES}?app_id=APP", None, "profiles:read"),
    ("GET", f"{PROFILES}/PROFILE", None, "profiles:read"),
    ("GET", "/api/system/encoders", None, "profiles:read"),
    ("POST", PROFILES, "CREATE", "profiles:write"),
    ("PUT", f"{PROFILES}/PROFILE", {"name": "Renamed"}, "profiles:write"),
    ("DELETE", f"{PROFILES}/PROFILE", None, "profiles:write"),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _, _ in SCOPED_ENDPOINTS]


async def call_scoped(owner, method, path, body, scopes):
    profile = await create_profile(owner, owner.app["id"])
    key = await owner.create_api_key(owner.app["id"], scopes)
    if body == "CREATE":
        body = profile_body(owner.app["id"])
    path = path.replace("PROFILE", profile["id"]).replace("APP", owner.app["id"])
    return await owner.client.request(method, path, json=body, headers=key_auth(key))


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"), SCOPED_ENDPOINTS, ids=ENDPOINT_IDS
)
async def test_profiles_scope_allows(owner, method, path, body, scope):
    response = await call_scoped(owner, method, path, body, [scope])
    assert 200 <= response.status < 300, await response.text()


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"), SCOPED_ENDPOINTS, ids=ENDPOINT_IDS
)
async def test_profiles_missing_scope_forbidden(owner, method, path, body, scope):
    scopes = [other for other in ALL_SCOPES if other != scope]
    response = await call_scoped(owner, method, path, body, scopes)
    assert response.status == 403
    assert (await detail_of(response)).startswith(f"missing scope {scope}:")


# --- the stream setting --------------------------------------------------------


async def stream_request(owner, method, path, body):
    response = await owner.client.request(
        method, path, json=body, headers=owner.headers
    )
    return response, await response.json()


async def test_stream_profile_valid_accepted(owner):
    profile = await create_profile(owner, owner.app["id"])
    settings = {"transcoding_profile_id": profile["id"]}
    stream = await owner.create_stream(owner.app["id"], settings=settings)
    assert stream["settings"] == settings


async def test_stream_profile_null_accepted(owner):
    settings = {"transcoding_profile_id": None}
    stream = await owner.create_stream(owner.app["id"], settings=settings)
    assert stream["settings"] == settings


async def test_stream_profile_unknown_rejected(owner):
    body = {
        "app_id": owner.app["id"],
        "title": "S",
        "settings": {"transcoding_profile_id": "profile_0"},
    }
    response, payload = await stream_request(owner, "POST", "/api/streams", body)
    assert response.status == 400
    assert payload["detail"].startswith("settings.transcoding_profile_id: ")
    assert "profile_0" in payload["detail"]


async def test_stream_profile_foreign_rejected(owner):
    other_app = await owner.create_app("Other app")
    foreign = await create_profile(owner, other_app["id"])
    body = {
        "app_id": owner.app["id"],
        "title": "S",
        "settings": {"transcoding_profile_id": foreign["id"]},
    }
    response, payload = await stream_request(owner, "POST", "/api/streams", body)
    assert response.status == 400
    assert payload["detail"].startswith("settings.transcoding_profile_id: ")


async def test_stream_profile_other_user_rejected(owner, make_user):
    other = await make_user()
    other_app = await other.create_app()
    foreign = await create_profile(other, other_app["id"])
    body = {
        "app_id": owner.app["id"],
        "title": "S",
        "settings": {"transcoding_profile_id": foreign["id"]},
    }
    response, _ = await stream_request(owner, "POST", "/api/streams", body)
    assert response.status == 400


async def test_stream_profile_wrong_type_rejected(owner):
    body = {
        "app_id": owner.app["id"],
        "title": "S",
        "settings": {"transcoding_profile_id": 7},
    }
    response, payload = await stream_request(owner, "POST", "/api/streams", body)
    assert response.status == 400
    assert payload["detail"].startswith("settings.transcoding_profile_id: must be")


async def test_stream_profile_update_valid(owner):
    profile = await create_profile(owner, owner.app["id"])
    stream = await owner.create_stream(owner.app["id"])
    settings = {"transcoding_profile_id": profile["id"]}
    response, payload = await stream_request(
        owner, "PUT", f"/api/streams/{stream['id']}", {"settings": settings}
    )
    assert response.status == 200
    assert payload["settings"] == settings


async def test_stream_profile_update_foreign_rejected(owner):
    other_app = await owner.create_app("Other app")
    foreign = await create_profile(owner, other_app["id"])
    stream = await owner.create_stream(owner.app["id"])
    settings = {"transcoding_profile_id": foreign["id"]}
    response, payload = await stream_request(
        owner, "PUT", f"/api/streams/{stream['id']}", {"settings": settings}
    )
    assert response.status == 400
    assert payload["detail"].startswith("settings.transcoding_profile_id: ")


async def test_stream_profile_update_unchanged_on_error(owner):
    stream = await owner.create_stream(owner.app["id"])
    settings = {"transcoding_profile_id": "profile_0"}
    await stream_request(
        owner, "PUT", f"/api/streams/{stream['id']}", {"settings": settings}
    )
    _, payload = await stream_request(
        owner, "GET", f"/api/streams/{stream['id']}", None
    )
    assert payload["settings"] == {}


# --- delete while in use -------------------------------------------------------


async def test_profiles_delete_live_stream_conflict(owner, start_publishing):
    profile = await create_profile(owner, owner.app["id"])
    settings = {"transcoding_profile_id": profile["id"]}
    stream = await owner.create_stream(owner.app["id"], settings=settings)
    await start_publishing(stream["id"])
    response = await owner.client.delete(
        f"{PROFILES}/{profile['id']}", headers=owner.headers
    )
    detail = await detail_of(response)
    assert response.status == 409
    assert stream["id"] in detail
    assert "live" in detail


async def test_profiles_delete_conflict_keeps_profile(owner, start_publishing):
    profile = await create_profile(owner, owner.app["id"])
    settings = {"transcoding_profile_id": profile["id"]}
    stream = await owner.create_stream(owner.app["id"], settings=settings)
    await start_publishing(stream["id"])
    item = f"{PROFILES}/{profile['id']}"
    await owner.client.delete(item, headers=owner.headers)
    response = await owner.client.get(item, headers=owner.headers)
    assert response.status == 200


async def test_profiles_delete_idle_stream_allowed(owner):
    profile = await create_profile(owner, owner.app["id"])
    settings = {"transcoding_profile_id": profile["id"]}
    await owner.create_stream(owner.app["id"], settings=settings)
    response = await owner.client.delete(
        f"{PROFILES}/{profile['id']}", headers=owner.headers
    )
    assert response.status == 204


async def test_profiles_delete_other_live_stream_allowed(owner, start_publishing):
    profile = await create_profile(owner, owner.app["id"])
    stream = await owner.create_stream(owner.app["id"])
    await start_publishing(stream["id"])
    response = await owner.client.delete(
        f"{PROFILES}/{profile['id']}", headers=owner.headers
    )
    assert response.status == 204


# --- encoders ------------------------------------------------------------------


async def test_system_encoders_lists_libx264(owner):
    response = await owner.client.get("/api/system/encoders", headers=owner.headers)
    body = await response.json()
    by_name = {entry["name"]: entry for entry in body}
    assert response.status == 200
    assert by_name["libx264"]["available"] is True
    assert by_name["libx264"]["hardware"] is False


async def test_system_encoders_needs_auth(api_client):
    response = await api_client.get("/api/system/encoders")
    assert response.status == 401


async def test_system_encoders_cached(owner, api_app):
    fake = [EncoderStatus("h264_nvenc", True, True, "mock")]
    api_app[ENCODERS].statuses = fake
    response = await owner.client.get("/api/system/encoders", headers=owner.headers)
    assert await response.json() == [
        {"name": "h264_nvenc", "available": True, "hardware": True, "detail": "mock"}
    ]
