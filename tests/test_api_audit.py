"""Tests for audit logs: recorded actions, security events, isolation, retention."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

import pytest
from aiohttp import web

from realcast_box.api import audit
from realcast_box.api.audit import AUDIT_WRITER
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import authenticate
from realcast_box.api.security import create_access_token
from realcast_box.appkeys import DATABASE, JWT_SECRET
from realcast_box.store import audit as audit_store
from realcast_box.store.audit import AuditEntry, AuditFilter, AuditWriter
from realcast_box.store.ids import format_timestamp, utc_now
from tests.box import start_box
from tests.conftest import basic_auth, flush_audit, key_auth
from tests.test_ingest_raw import RawPublisher

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
AGENT = {"User-Agent": "audit-test/1.0"}
ENTRY_FIELDS = {
    "id",
    "user_id",
    "app_id",
    "api_key_id",
    "action",
    "resource_type",
    "resource_id",
    "ip_address",
    "user_agent",
    "status",
    "security_event",
    "detail",
    "timestamp",
}


@pytest.fixture
async def owner(make_user):
    user = await make_user("owner@example.com")
    user.app = await user.create_app("Owner's app")
    return user


async def read_log(user, path="/api/audit-logs", headers=None, **params):
    """Flush the audit writer and return the entries ``user`` can list."""
    await flush_audit(user.client.app)
    response = await user.client.get(
        path, params=params, headers=headers or user.headers
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def security_events(user, **params):
    return await read_log(user, "/api/audit-logs/security-events", **params)


def only(entries, action):
    """Return the single entry with ``action``."""
    matching = [entry for entry in entries if entry["action"] == action]
    assert len(matching) == 1, [entry["action"] for entry in entries]
    return matching[0]


async def all_entries(app):
    """Return every stored entry, whoever it belongs to."""
    await app[AUDIT_WRITER].flush()
    return await audit_store.list_entries(
        app[DATABASE], AuditFilter(), limit=1000, skip=0
    )


# --- actions -----------------------------------------------------------------


async def test_audit_every_action_recorded(owner):
    client, headers = owner.client, {**owner.headers, **AGENT}
    app_id = owner.app["id"]
    await client.put(f"/api/apps/{app_id}", json={"name": "B"}, headers=headers)
    response = await client.post(
        "/api/streams", json={"app_id": app_id, "title": "S"}, headers=headers
    )
    stream_id = (await response.json())["id"]
    await client.put(f"/api/streams/{stream_id}", json={"title": "T"}, headers=headers)
    await client.post(f"/api/streams/{stream_id}/reset-key", headers=headers)
    await client.delete(f"/api/streams/{stream_id}", headers=headers)
    response = await client.post(
        "/api/api-keys",
        json={"app_id": app_id, "name": "K", "scopes": ["apps:read"]},
        headers=headers,
    )
    key_id = (await response.json())["id"]
    await client.post(f"/api/api-keys/{key_id}/regenerate", headers=headers)
    await client.delete(f"/api/api-keys/{key_id}", headers=headers)
    await client.delete(f"/api/apps/{app_id}", headers=headers)

    entries = await read_log(owner, limit="100")
    expected = [
        ("update_app", "app", app_id),
        ("create_stream", "stream", stream_id),
        ("update_stream", "stream", stream_id),
        ("reset_stream_key", "stream", stream_id),
        ("delete_stream", "stream", stream_id),
        ("create_api_key", "api_key", key_id),
        ("regenerate_api_key", "api_key", key_id),
        ("delete_api_key", "api_key", key_id),
        ("delete_app", "app", app_id),
    ]
    for action, resource_type, resource_id in expected:
        entry = only(entries, action)
        assert set(entry) == ENTRY_FIELDS, action
        assert re.fullmatch(r"log_[0-9a-f]{16}", entry["id"]), action
        assert entry["user_id"] == owner.id, action
        assert entry["app_id"] == app_id, action
        assert entry["api_key_id"] is None, action
        assert entry["resource_type"] == resource_type, action
        assert entry["resource_id"] == resource_id, action
        assert entry["ip_address"] == "127.0.0.1", action
        assert entry["user_agent"] == "audit-test/1.0", action
        assert entry["status"] == "success", action
        assert TIMESTAMP.fullmatch(entry["timestamp"]), action


async def test_audit_create_app_recorded(owner):
    entry = only(await read_log(owner), "create_app")
    assert entry["resource_type"] == "app"
    assert entry["resource_id"] == owner.app["id"]
    assert entry["app_id"] == owner.app["id"]
    assert entry["status"] == "success"


async def test_audit_register_and_login_recorded(api_client):
    credentials = {"email": "new@example.com", "password": "long enough password"}
    response = await api_client.post(
        "/api/auth/register", json=credentials, headers=AGENT
    )
    user_id = (await response.json())["id"]
    response = await api_client.post("/api/auth/login", json=credentials, headers=AGENT)
    token = (await response.json())["access_token"]
    await flush_audit(api_client.app)
    response = await api_client.get(
        "/api/audit-logs", headers={"Authorization": f"Bearer {token}"}
    )
    entries = await response.json()
    for action in ("register", "login"):
        entry = only(entries, action)
        assert entry["user_id"] == user_id, action
        assert entry["resource_type"] == "user", action
        assert entry["resource_id"] == user_id, action
        assert entry["user_agent"] == "audit-test/1.0", action
        assert entry["status"] == "success", action
        assert entry["security_event"] is False, action


async def test_audit_failed_action_recorded_as_failure(owner):
    response = await owner.client.put(
        "/api/streams/stream_0000000000000000",
        json={"title": "x"},
        headers=owner.headers,
    )
    entry = only(await read_log(owner), "update_stream")
    assert response.status == 404
    assert entry["status"] == "failure"
    assert entry["resource_id"] == "stream_0000000000000000"
    assert entry["detail"] == "stream not found: stream_0000000000000000"


async def test_audit_invalid_body_recorded_as_failure(owner):
    await owner.client.post(
        "/api/streams",
        json={"app_id": owner.app["id"], "title": ""},
        headers=owner.headers,
    )
    entry = only(await read_log(owner), "create_stream")
    assert entry["status"] == "failure"
    assert entry["detail"] == "title: must not be empty"


async def test_audit_unauthenticated_call_not_recorded(owner):
    await owner.client.post("/api/apps", json={"name": "x"})
    entries = await read_log(owner)
    assert [entry["action"] for entry in entries].count("create_app") == 1


async def test_audit_key_action_names_key(owner):
    key = await owner.create_api_key(owner.app["id"], ["streams:write"])
    await owner.client.post(
        "/api/streams",
        json={"app_id": owner.app["id"], "title": "By key"},
        headers=key_auth(key),
    )
    entry = only(await read_log(owner), "create_stream")
    assert entry["api_key_id"] == key["id"]
    assert entry["user_id"] == owner.id
    assert entry["app_id"] == owner.app["id"]


async def test_audit_reads_not_recorded(owner):
    await owner.client.get("/api/apps", headers=owner.headers)
    await owner.client.get(f"/api/apps/{owner.app['id']}", headers=owner.headers)
    entries = await read_log(owner)
    assert [entry["action"] for entry in entries] == ["create_app", "login", "register"]


# --- security events -----------------------------------------------------------


async def test_audit_failed_login_goes_to_account(owner):
    response = await owner.client.post(
        "/api/auth/login",
        json={"email": owner.email, "password": "Hunter2-guess"},
        headers=AGENT,
    )
    entry = only(await security_events(owner), "login_failed")
    assert response.status == 401
    assert entry["user_id"] == owner.id
    assert entry["status"] == "failure"
    assert entry["security_event"] is True
    assert entry["ip_address"] == "127.0.0.1"
    assert entry["user_agent"] == "audit-test/1.0"
    assert entry["detail"] == "login with a wrong password"
    assert "Hunter2-guess" not in str(entry)


async def test_audit_failed_login_unknown_email_has_no_user(api_client):
    await api_client.post(
        "/api/auth/login",
        json={"email": "nobody@example.com", "password": "whatever password"},
    )
    entry = only(await all_entries(api_client.app), "login_failed")
    assert entry["user_id"] is None
    assert entry["detail"] == "login with an unknown email"
    assert "nobody@example.com" not in str(entry)


async def test_audit_invalid_token_recorded(api_client):
    response = await api_client.get(
        "/api/apps", headers={"Authorization": "Bearer not-a-jwt"}
    )
    entry = only(await all_entries(api_client.app), "invalid_token")
    assert response.status == 401
    assert entry["user_id"] is None
    assert entry["security_event"] is True
    assert "not-a-jwt" not in entry["detail"]
    assert "GET /api/apps" in entry["detail"]


async def test_audit_missing_token_not_recorded(api_client):
    await api_client.get("/api/apps")
    assert await all_entries(api_client.app) == []


async def test_audit_expired_token_goes_to_user(owner, api_app):
    token = create_access_token(
        owner.id,
        api_app[JWT_SECRET],
        expiry_minutes=1,
        now=utc_now() - timedelta(hours=1),
    )
    response = await owner.client.get(
        "/api/apps", headers={"Authorization": f"Bearer {token}"}
    )
    entry = only(await security_events(owner), "expired_token")
    assert response.status == 401
    assert entry["user_id"] == owner.id
    assert token not in str(entry)


async def test_audit_scope_denial_recorded(owner):
    key = await owner.create_api_key(owner.app["id"], ["streams:read"])
    await owner.client.post(
        "/api/streams",
        json={"app_id": owner.app["id"], "title": "x"},
        headers=key_auth(key),
    )
    entries = await security_events(owner)
    entry = only(entries, "scope_denied")
    assert entry["api_key_id"] == key["id"]
    assert entry["app_id"] == owner.app["id"]
    assert entry["detail"].startswith("missing scope streams:write")
    assert "create_stream" not in [other["action"] for other in entries]


async def test_audit_permission_denial_recorded(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    await owner.client.get("/api/api-keys", headers=key_auth(key))
    entry = only(await security_events(owner), "permission_denied")
    assert entry["api_key_id"] == key["id"]
    assert entry["detail"].startswith("API keys cannot manage API keys")


async def test_audit_wrong_key_secret_goes_to_owner(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    await owner.client.get(
        "/api/apps", headers=basic_auth(key["api_key"], "rcs_live_guess")
    )
    entry = only(await security_events(owner), "invalid_api_key")
    assert entry["api_key_id"] == key["id"]
    assert entry["app_id"] == owner.app["id"]
    assert "rcs_live_guess" not in str(entry)


async def test_audit_expired_key_recorded(owner, database):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    await database.execute(
        "UPDATE api_keys SET expires_at = ? WHERE id = ?",
        ("2001-01-01T00:00:00Z", key["id"]),
    )
    await owner.client.get("/api/apps", headers=key_auth(key))
    entry = only(await security_events(owner), "expired_api_key")
    assert entry["api_key_id"] == key["id"]


async def test_audit_key_regeneration_and_deletion_are_events(owner):
    key = await owner.create_api_key(owner.app["id"], ["apps:read"])
    await owner.client.post(
        f"/api/api-keys/{key['id']}/regenerate", headers=owner.headers
    )
    await owner.client.delete(f"/api/api-keys/{key['id']}", headers=owner.headers)
    entries = await security_events(owner)
    for action in ("regenerate_api_key", "delete_api_key"):
        entry = only(entries, action)
        assert entry["resource_id"] == key["id"], action
        assert entry["status"] == "success", action
    assert "create_api_key" not in [entry["action"] for entry in entries]


async def test_audit_denial_recorded_once_when_authenticated_twice(
    api_app, aiohttp_client
):
    # A middleware that authenticates first, as the rate limiter does.
    @web.middleware
    async def early_authentication(request, handler):
        try:
            await authenticate(request)
        except ApiError:
            pass
        return await handler(request)

    api_app.middlewares.append(early_authentication)
    client = await aiohttp_client(api_app)
    await client.get("/api/apps", headers={"Authorization": "Bearer not-a-jwt"})
    entries = await all_entries(api_app)
    assert [entry["action"] for entry in entries] == ["invalid_token"]


async def test_audit_record_security_event_for_rate_limiter(owner):
    await audit.record_security_event(
        owner.client.app,
        None,
        "rate_limited",
        "60 requests per minute exceeded",
        owner.id,
        owner.app["id"],
    )
    entry = only(await security_events(owner), "rate_limited")
    assert entry["app_id"] == owner.app["id"]
    assert entry["detail"] == "60 requests per minute exceeded"
    assert entry["status"] == "failure"


async def test_audit_security_events_exclude_plain_actions(owner):
    entries = await security_events(owner)
    assert entries == []


# --- RTMP events, with a real publisher ------------------------------------------


async def rtmp_events(box):
    await box.app[AUDIT_WRITER].flush()
    return await audit_store.list_entries(
        box.app[DATABASE],
        AuditFilter(security_only=True),
        limit=100,
        skip=0,
    )


async def publish_and_wait(box, stream_key):
    publisher = await RawPublisher.connect(box.rtmp_port, stream_key)
    await publisher.publish()
    codes = await publisher.status_codes()
    await publisher.close()
    return [code for code, _ in codes]


async def test_audit_rtmp_unknown_key_recorded(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    codes = await publish_and_wait(box, "app_x_stream_y_sk_nope")
    entry = only(await rtmp_events(box), "rtmp_invalid_stream_key")
    assert codes == ["NetStream.Publish.BadName"]
    assert entry["user_id"] is None
    assert entry["ip_address"] == "127.0.0.1"
    assert entry["detail"].startswith("RTMP publish from 127.0.0.1:")
    assert "sk_nope" not in str(entry)


async def test_audit_rtmp_old_key_after_reset_goes_to_owner(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    response = await box.client.post(
        f"/api/streams/{stream['id']}/reset-key", headers=box.auth
    )
    assert response.status == 200
    codes = await publish_and_wait(box, stream["stream_key"])
    await box.app[AUDIT_WRITER].flush()
    response = await box.client.get("/api/audit-logs/security-events", headers=box.auth)
    entry = only(await response.json(), "rtmp_invalid_stream_key")
    assert codes == ["NetStream.Publish.BadName"]
    assert entry["resource_type"] == "stream"
    assert entry["resource_id"] == stream["id"]
    assert entry["app_id"] == stream["app_id"]
    assert entry["ip_address"] == "127.0.0.1"
    assert stream["stream_key"] not in str(entry)


# --- visibility ------------------------------------------------------------------


async def test_audit_users_see_only_their_entries(owner, make_user):
    other = await make_user()
    await other.create_app("Other app")
    owner_entries = await read_log(owner)
    other_entries = await read_log(other)
    assert {entry["user_id"] for entry in owner_entries} == {owner.id}
    assert {entry["user_id"] for entry in other_entries} == {other.id}


async def test_audit_other_users_app_filter_empty(owner, make_user):
    other = await make_user()
    entries = await read_log(other, app_id=owner.app["id"])
    assert entries == []


async def test_audit_app_filter(owner):
    second = await owner.create_app("Second")
    entries = await read_log(owner, app_id=second["id"])
    assert [entry["resource_id"] for entry in entries] == [second["id"]]


async def test_audit_key_sees_only_its_app(owner):
    second = await owner.create_app("Second")
    key = await owner.create_api_key(second["id"], ["audit:read"])
    entries = await read_log(owner, headers=key_auth(key))
    assert {entry["app_id"] for entry in entries} == {second["id"]}
    assert {entry["action"] for entry in entries} == {"create_app", "create_api_key"}


async def test_audit_entries_survive_app_deletion(owner):
    await owner.client.delete(f"/api/apps/{owner.app['id']}", headers=owner.headers)
    entries = await read_log(owner, app_id=owner.app["id"])
    assert [entry["action"] for entry in entries] == ["delete_app", "create_app"]


async def insert_entry(api_app, age: timedelta, **fields) -> AuditEntry:
    entry = AuditEntry(timestamp=format_timestamp(utc_now() - age), **fields)
    await audit_store.insert_entries(api_app[DATABASE], [entry])
    return entry


async def test_audit_days_filter(owner, api_app):
    old = await insert_entry(
        api_app, timedelta(days=3), action="update_app", user_id=owner.id
    )
    recent = await read_log(owner, days="2")
    everything = await read_log(owner)
    assert old.id not in [entry["id"] for entry in recent]
    assert old.id in [entry["id"] for entry in everything]


async def test_audit_action_filter_exact(owner):
    await owner.create_app("Second")
    entries = await read_log(owner, action="create_app")
    assert len(entries) == 2
    assert {entry["action"] for entry in entries} == {"create_app"}


async def test_audit_action_filter_prefix(owner, api_app):
    await insert_entry(api_app, timedelta(0), action="login_failed", user_id=owner.id)
    # "_" matches only itself here, while LIKE would take it as any character.
    await insert_entry(api_app, timedelta(0), action="loginXfailed", user_id=owner.id)
    entries = await read_log(owner, action="login_*")
    assert [entry["action"] for entry in entries] == ["login_failed"]


async def test_audit_action_filter_exact_excludes_longer(owner, api_app):
    await insert_entry(
        api_app, timedelta(0), action="create_app_extra", user_id=owner.id
    )
    entries = await read_log(owner, action="create_app")
    assert {entry["action"] for entry in entries} == {"create_app"}


async def test_audit_action_filter_on_security_events(owner):
    await owner.client.post(
        "/api/auth/login", json={"email": owner.email, "password": "wrong password"}
    )
    entries = await security_events(owner, action="login*")
    assert [entry["action"] for entry in entries] == ["login_failed"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"action": ""}, "action: must be an action name"),
        ({"action": "*"}, "action: must be an action name"),
        ({"action": "login%"}, "action: must be an action name"),
        ({"action": "lo*gin"}, "action: must be an action name"),
        ({"action": "a" * 101}, "action: must be at most 100 characters"),
        ({"days": "0"}, "days: must be an integer from 1 to 3650"),
        ({"days": "x"}, "days: must be an integer"),
        ({"app_id": ""}, "app_id: must not be empty"),
        ({"limit": "101"}, "limit: must be an integer from 1 to 100"),
    ],
)
async def test_audit_bad_query_rejected(owner, params, expected):
    response = await owner.client.get(
        "/api/audit-logs", params=params, headers=owner.headers
    )
    detail = (await response.json())["detail"]
    assert response.status == 400
    assert detail.startswith(expected)


# --- retention ----------------------------------------------------------------------


async def test_audit_prune_removes_old_entries(owner, api_app):
    old = await insert_entry(api_app, timedelta(days=91), action="login")
    kept = await insert_entry(api_app, timedelta(days=89), action="login")
    deleted = await audit.prune(api_app[DATABASE], 90)
    ids = [entry["id"] for entry in await all_entries(api_app)]
    assert deleted == 1
    assert old.id not in ids
    assert kept.id in ids


async def test_audit_pruner_runs_at_start(database):
    old = AuditEntry(
        action="login", timestamp=format_timestamp(utc_now() - timedelta(days=10))
    )
    await audit_store.insert_entries(database, [old])
    pruner = asyncio.create_task(audit.run_pruner(database, 5, interval=3600))
    try:
        for _ in range(200):
            if await audit_store.count_entries(database, AuditFilter()) == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        pruner.cancel()
    assert await audit_store.count_entries(database, AuditFilter()) == 0


async def test_audit_retention_setting_default(config):
    assert config.audit_retention_days == 90


# --- the writer -----------------------------------------------------------------------


async def test_audit_writer_drops_when_full(database, caplog):
    writer = AuditWriter(database, queue_size=2)
    with caplog.at_level(logging.WARNING, logger="realcast_box.store.audit"):
        accepted = [writer.submit(AuditEntry(action="login")) for _ in range(3)]
    await writer.flush()
    assert accepted == [True, True, False]
    assert writer.dropped == 1
    assert "audit queue full" in caplog.text
    assert await audit_store.count_entries(database, AuditFilter()) == 2


async def test_audit_writer_batches(database):
    writer = AuditWriter(database, batch_size=3)
    for index in range(7):
        writer.submit(AuditEntry(action="login", detail=str(index)))
    writer.start()
    await writer.flush()
    await writer.close()
    entries = await audit_store.list_entries(database, AuditFilter(), limit=10, skip=0)
    assert [entry["detail"] for entry in entries] == [str(i) for i in range(6, -1, -1)]


async def test_audit_writer_close_writes_queue(database):
    writer = AuditWriter(database)
    writer.start()
    writer.submit(AuditEntry(action="login"))
    await writer.close()
    assert await audit_store.count_entries(database, AuditFilter()) == 1


async def test_audit_writer_survives_write_error(database, caplog):
    writer = AuditWriter(database)
    writer.start()
    await database.execute("ALTER TABLE audit_logs RENAME TO audit_logs_away")
    writer.submit(AuditEntry(action="login"))
    await writer.flush()
    await database.execute("ALTER TABLE audit_logs_away RENAME TO audit_logs")
    writer.submit(AuditEntry(action="register"))
    await writer.close()
    entries = await audit_store.list_entries(database, AuditFilter(), limit=10, skip=0)
    assert writer.failed == 1
    assert [entry["action"] for entry in entries] == ["register"]
    assert "failed to write 1 audit entries" in caplog.text


def test_audit_entry_invalid_status_rejected():
    with pytest.raises(ValueError, match="invalid audit status 'ok'"):
        AuditEntry(action="login", status="ok")


async def test_audit_writer_close_waits_for_batch(database):
    writer = AuditWriter(database, batch_size=50)
    writer.start()
    for _ in range(500):
        writer.submit(AuditEntry(action="login"))
    await asyncio.sleep(0)
    await writer.close()
    assert await audit_store.count_entries(database, AuditFilter()) == 500
