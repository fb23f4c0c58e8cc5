"""Tests for limit, skip, X-Total-Count and stable order on every list endpoint."""

from __future__ import annotations

import pytest

from realcast_box.store import api_keys as key_store
from realcast_box.store import apps as app_store
from realcast_box.store import audit as audit_store
from realcast_box.store import streams as stream_store
from realcast_box.store.audit import AuditEntry
from tests.conftest import flush_audit

SAME_TIME = "2030-01-01T00:00:00Z"
COUNT = 7


async def make_apps(owner, database):
    for index in range(COUNT):
        await app_store.create_app(database, owner.id, f"App {index}", "", {})
    await database.execute("UPDATE apps SET created_at = ?", (SAME_TIME,))


async def make_streams(owner, database):
    for index in range(COUNT):
        await stream_store.create_stream(database, owner.app["id"], f"S{index}", "", {})
    await database.execute("UPDATE streams SET created_at = ?", (SAME_TIME,))


async def make_keys(owner, database):
    for index in range(COUNT):
        await key_store.create_key(
            database, owner.app["id"], f"K{index}", ["apps:read"], "hash", None
        )
    await database.execute("UPDATE api_keys SET created_at = ?", (SAME_TIME,))


async def make_entries(owner, database, *, security_event=False):
    entries = [
        AuditEntry(
            action="rate_limited" if security_event else "update_app",
            user_id=owner.id,
            security_event=security_event,
            detail=str(index),
            timestamp=SAME_TIME,
        )
        for index in range(COUNT)
    ]
    await audit_store.insert_entries(database, entries)


async def make_events(owner, database):
    await make_entries(owner, database, security_event=True)


# (path, function that adds COUNT items sharing one timestamp)
LISTS = [
    ("/api/apps", make_apps),
    ("/api/streams", make_streams),
    ("/api/api-keys", make_keys),
    ("/api/audit-logs", make_entries),
    ("/api/audit-logs/security-events", make_events),
]
PATHS = [path for path, _make in LISTS]


@pytest.fixture
async def owner(make_user):
    user = await make_user("owner@example.com")
    user.app = await user.create_app("Owner's app")
    await flush_audit(user.client.app)
    return user


async def get_page(owner, path, **params):
    response = await owner.client.get(path, params=params, headers=owner.headers)
    assert response.status == 200, await response.text()
    return response, await response.json()


def identify(item):
    return item["id"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"limit": "0"}, "limit: must be an integer from 1 to 100, got '0'"),
        ({"limit": "101"}, "limit: must be an integer from 1 to 100, got '101'"),
        ({"limit": "abc"}, "limit: must be an integer from 1 to 100, got 'abc'"),
        ({"limit": ""}, "limit: must be an integer"),
        ({"limit": "-5"}, "limit: must be an integer"),
        ({"skip": "-1"}, "skip: must be an integer from 0"),
        ({"skip": "abc"}, "skip: must be an integer from 0"),
        ({"skip": "1e3"}, "skip: must be an integer from 0"),
    ],
)
@pytest.mark.parametrize("path", PATHS)
async def test_pagination_bad_values_rejected(owner, path, params, expected):
    response = await owner.client.get(path, params=params, headers=owner.headers)
    body = await response.json()
    assert response.status == 400
    assert body["detail"].startswith(expected)


@pytest.mark.parametrize(("path", "make"), LISTS)
async def test_pagination_limit_bounds_accepted(owner, database, path, make):
    await make(owner, database)
    _, one = await get_page(owner, path, limit="1")
    _, hundred = await get_page(owner, path, limit="100")
    assert len(one) == 1
    assert len(hundred) >= COUNT


@pytest.mark.parametrize(("path", "make"), LISTS)
async def test_pagination_total_count_header(owner, database, path, make):
    await make(owner, database)
    _, everything = await get_page(owner, path, limit="100")
    response, page = await get_page(owner, path, limit="2", skip="1")
    assert response.headers["X-Total-Count"] == str(len(everything))
    assert len(page) == 2


@pytest.mark.parametrize(("path", "make"), LISTS)
async def test_pagination_skip_past_end_empty(owner, database, path, make):
    await make(owner, database)
    response, page = await get_page(owner, path, skip="1000")
    assert page == []
    assert int(response.headers["X-Total-Count"]) >= COUNT


@pytest.mark.parametrize(("path", "make"), LISTS)
async def test_pagination_equal_timestamps_stable(owner, database, path, make):
    await make(owner, database)
    _, everything = await get_page(owner, path, limit="100")
    _, again = await get_page(owner, path, limit="100")
    pages = []
    for skip in range(0, len(everything), 3):
        _, page = await get_page(owner, path, limit="3", skip=str(skip))
        pages.extend(page)
    assert list(map(identify, again)) == list(map(identify, everything))
    assert list(map(identify, pages)) == list(map(identify, everything))
    assert len(set(map(identify, pages))) == len(everything)


@pytest.mark.parametrize(("path", "make"), LISTS)
async def test_pagination_newest_first(owner, database, path, make):
    await make(owner, database)
    _, everything = await get_page(owner, path, limit="100")
    times = [item.get("created_at") or item.get("timestamp") for item in everything]
    assert times == sorted(times, reverse=True)


async def test_pagination_equal_timestamps_newest_insert_first(owner, database):
    await make_entries(owner, database)
    _, page = await get_page(owner, "/api/audit-logs", limit="3")
    assert [entry["detail"] for entry in page] == ["6", "5", "4"]


async def test_pagination_default_limit_50(owner, database):
    entries = [
        AuditEntry(action="update_app", user_id=owner.id, timestamp=SAME_TIME)
        for _ in range(60)
    ]
    await audit_store.insert_entries(database, entries)
    response, page = await get_page(owner, "/api/audit-logs")
    assert len(page) == 50
    assert int(response.headers["X-Total-Count"]) > 60
