"""Tests for /api/webhooks: configuration, checks, scopes, the log and audit.

These run the API without a dispatcher, so test events and redeliveries
stay pending in the outbox; tests/test_webhooks_e2e.py covers delivery.
"""

from __future__ import annotations

import pytest

from realcast_box.events import EVENT_TYPES
from realcast_box.store import api_keys as key_store
from tests.conftest import flush_audit, key_auth

WEBHOOKS = "/api/webhooks"
RECEIVER = "http://192.168.1.50:9000/hooks/realcast"
WEBHOOK_FIELDS = {
    "id",
    "app_id",
    "url",
    "events",
    "status",
    "consecutive_failures",
    "disabled_reason",
    "disabled_at",
    "created_at",
    "updated_at",
}


@pytest.fixture
async def owner(make_user):
    user = await make_user("owner@example.com")
    user.app = await user.create_app("Owner's app")
    return user


async def create_webhook(user, app_id: str, **fields) -> dict:
    body = {"app_id": app_id, "url": RECEIVER, "events": ["stream.live"], **fields}
    response = await user.client.post(WEBHOOKS, json=body, headers=user.headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def post_webhook(user, headers=None, **fields):
    body = {"app_id": user.app["id"], "url": RECEIVER, "events": ["stream.live"]}
    body.update(fields)
    response = await user.client.post(
        WEBHOOKS, json=body, headers=headers or user.headers
    )
    return response, await response.json()


async def test_webhooks_create_generates_secret_once(owner):
    webhook = await create_webhook(
        owner, owner.app["id"], events=["stream.live", "stream.offline"]
    )
    response = await owner.client.get(
        f"{WEBHOOKS}/{webhook['id']}", headers=owner.headers
    )
    fetched = await response.json()

    assert set(webhook) == WEBHOOK_FIELDS | {"secret"}
    assert webhook["secret"].startswith("whsec_")
    assert webhook["id"].startswith("webhook_")
    assert webhook["status"] == "active"
    assert webhook["events"] == ["stream.live", "stream.offline"]
    assert webhook["url"] == RECEIVER
    assert response.status == 200
    assert set(fetched) == WEBHOOK_FIELDS
    assert fetched["events"] == webhook["events"]


async def test_webhooks_given_secret_not_returned(owner):
    webhook = await create_webhook(
        owner, owner.app["id"], secret="your_webhook_secret_key"
    )
    assert "secret" not in webhook


async def test_webhooks_every_event_type_accepted(owner):
    webhook = await create_webhook(owner, owner.app["id"], events=list(EVENT_TYPES))
    assert webhook["events"] == list(EVENT_TYPES)


async def test_webhooks_duplicate_events_dropped(owner):
    webhook = await create_webhook(
        owner, owner.app["id"], events=["stream.live", "stream.live"]
    )
    assert webhook["events"] == ["stream.live"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"events": ["stream.live", "stream.started"]}, "'stream.started'"),
        ({"events": []}, "events: must not be empty"),
        ({"events": "stream.live"}, "events: must be an array"),
        ({"url": "ftp://example.com/"}, "url: invalid URL"),
        ({"url": "http://user:pw@example.com/"}, "url: must not contain credentials"),
        ({"url": "http://169.254.169.254/latest"}, "url: address 169.254.169.254"),
        ({"url": "http://[fd00:ec2::254]/"}, "url: address fd00:ec2::254"),
        ({"url": "http://[fe80::1]/"}, "url: address fe80::1"),
        (
            {"url": "http://2852039166/latest"},
            "url: host 2852039166 resolves to the denied address 169.254.169.254",
        ),
        ({"url": ""}, "url: must not be empty"),
        ({"secret": "short"}, "secret: must be at least 16 characters"),
        ({"secret": 12345}, "secret: must be a string"),
        ({"secret": "whsec_AAAA"}, "secret: the base64 after 'whsec_'"),
        ({"status": "active"}, "status: unknown field"),
    ],
)
async def test_webhooks_create_invalid(owner, fields, message):
    response, body = await post_webhook(owner, **fields)

    assert response.status == 400
    assert message in body["detail"]
    assert body["status_code"] == 400


async def test_webhooks_unknown_event_lists_choices(owner):
    response, body = await post_webhook(owner, events=["stream.liv"])

    assert response.status == 400
    assert body["detail"].startswith("events: unknown value 'stream.liv'")
    assert "stream.live" in body["detail"]


async def test_webhooks_loopback_and_lan_allowed(owner):
    for url in ("http://127.0.0.1:8000/hook", "http://localhost/hook", RECEIVER):
        webhook = await create_webhook(owner, owner.app["id"], url=url)
        assert webhook["url"] == url


async def test_webhooks_missing_app_404(owner):
    response, body = await post_webhook(owner, app_id="app_0000000000000000")
    assert response.status == 404
    assert body["detail"] == "app not found: app_0000000000000000"


async def test_webhooks_list_by_app(owner):
    other_app = await owner.create_app("Second app")
    first = await create_webhook(owner, owner.app["id"])
    second = await create_webhook(owner, other_app["id"])

    response = await owner.client.get(
        WEBHOOKS, params={"app_id": owner.app["id"]}, headers=owner.headers
    )
    listed = await response.json()
    response_all = await owner.client.get(WEBHOOKS, headers=owner.headers)
    everything = await response_all.json()

    assert response.status == 200
    assert [item["id"] for item in listed] == [first["id"]]
    assert response.headers["X-Total-Count"] == "1"
    assert [item["id"] for item in everything] == [second["id"], first["id"]]
    assert all("secret" not in item for item in everything)


async def test_webhooks_other_user_gets_404(owner, make_user):
    webhook = await create_webhook(owner, owner.app["id"])
    stranger = await make_user("stranger@example.com")
    item = f"{WEBHOOKS}/{webhook['id']}"
    requests = [
        ("GET", item, None),
        ("PUT", item, {"events": ["stream.offline"]}),
        ("DELETE", item, None),
        ("GET", f"{item}/deliveries", None),
        ("POST", f"{item}/test", None),
        ("POST", f"{item}/deliveries/dlv_0000000000000000/redeliver", None),
    ]
    for method, path, body in requests:
        response = await stranger.client.request(
            method, path, json=body, headers=stranger.headers
        )
        error = await response.json()
        assert response.status == 404, (method, path)
        assert error["detail"] == f"webhook not found: {webhook['id']}"
    response = await stranger.client.get(
        WEBHOOKS, params={"app_id": owner.app["id"]}, headers=stranger.headers
    )
    assert response.status == 404


async def test_webhooks_update_fields(owner):
    webhook = await create_webhook(owner, owner.app["id"])
    changes = {
        "url": "http://10.0.0.9/new",
        "events": ["stream.offline", "chat.message.new"],
        "secret": "a new secret of some length",
    }
    response = await owner.client.put(
        f"{WEBHOOKS}/{webhook['id']}", json=changes, headers=owner.headers
    )
    updated = await response.json()

    assert response.status == 200
    assert updated["url"] == "http://10.0.0.9/new"
    assert updated["events"] == ["stream.offline", "chat.message.new"]
    assert "secret" not in updated
    assert updated["created_at"] == webhook["created_at"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "http://169.254.169.254/"}, "url: address 169.254.169.254"),
        ({"events": ["nope"]}, "events: unknown value 'nope'"),
        ({"status": "paused"}, "status: must be one of active, disabled"),
        ({"secret": None}, "secret: must be a string"),
        ({"app_id": "app_0"}, "app_id: unknown field"),
    ],
)
async def test_webhooks_update_invalid(owner, changes, message):
    webhook = await create_webhook(owner, owner.app["id"])
    response = await owner.client.put(
        f"{WEBHOOKS}/{webhook['id']}", json=changes, headers=owner.headers
    )
    body = await response.json()

    assert response.status == 400
    assert message in body["detail"]


async def test_webhooks_disable_and_enable(owner):
    webhook = await create_webhook(owner, owner.app["id"], events=["webhook.test"])
    item = f"{WEBHOOKS}/{webhook['id']}"
    queued = await (
        await owner.client.post(f"{item}/test", headers=owner.headers)
    ).json()

    response = await owner.client.put(
        item, json={"status": "disabled"}, headers=owner.headers
    )
    disabled = await response.json()
    test = await owner.client.post(f"{item}/test", headers=owner.headers)
    log = await (
        await owner.client.get(f"{item}/deliveries", headers=owner.headers)
    ).json()
    redeliver = await owner.client.post(
        f"{item}/deliveries/{queued['id']}/redeliver", headers=owner.headers
    )
    enabled = await (
        await owner.client.put(item, json={"status": "active"}, headers=owner.headers)
    ).json()

    assert disabled["status"] == "disabled"
    assert disabled["disabled_reason"] == "disabled by a user"
    assert disabled["disabled_at"] is not None
    assert test.status == 409
    assert redeliver.status == 409
    assert log[0]["status"] == "failed"
    assert log[0]["last_error"] == "webhook disabled by a user"
    assert enabled["status"] == "active"
    assert enabled["disabled_reason"] is None
    assert enabled["disabled_at"] is None


async def test_webhooks_delete(owner):
    webhook = await create_webhook(owner, owner.app["id"], events=["webhook.test"])
    item = f"{WEBHOOKS}/{webhook['id']}"
    await owner.client.post(f"{item}/test", headers=owner.headers)

    deleted = await owner.client.delete(item, headers=owner.headers)
    fetched = await owner.client.get(item, headers=owner.headers)
    again = await owner.client.delete(item, headers=owner.headers)

    assert deleted.status == 204
    assert fetched.status == 404
    assert again.status == 404


async def test_webhooks_deleted_with_app(owner):
    webhook = await create_webhook(owner, owner.app["id"])
    await owner.client.delete(f"/api/apps/{owner.app['id']}", headers=owner.headers)
    response = await owner.client.get(
        f"{WEBHOOKS}/{webhook['id']}", headers=owner.headers
    )
    assert response.status == 404


async def test_webhooks_test_event_queued(owner):
    webhook = await create_webhook(owner, owner.app["id"], events=["stream.live"])
    item = f"{WEBHOOKS}/{webhook['id']}"

    response = await owner.client.post(f"{item}/test", headers=owner.headers)
    queued = await response.json()
    log_response = await owner.client.get(f"{item}/deliveries", headers=owner.headers)
    log = await log_response.json()

    assert response.status == 202
    assert queued["event_type"] == "webhook.test"
    assert queued["status"] == "pending"
    assert queued["attempt_count"] == 0
    assert queued["attempts"] == []
    assert queued["next_attempt_at"] is not None
    assert queued["event_id"].startswith("evt_")
    assert queued["id"].startswith("dlv_")
    assert log == [queued]
    assert log_response.headers["X-Total-Count"] == "1"


async def test_webhooks_redeliver_copies_event(owner):
    webhook = await create_webhook(owner, owner.app["id"])
    item = f"{WEBHOOKS}/{webhook['id']}"
    queued = await (
        await owner.client.post(f"{item}/test", headers=owner.headers)
    ).json()

    response = await owner.client.post(
        f"{item}/deliveries/{queued['id']}/redeliver", headers=owner.headers
    )
    again = await response.json()
    missing = await owner.client.post(
        f"{item}/deliveries/dlv_0000000000000000/redeliver", headers=owner.headers
    )
    missing_body = await missing.json()

    assert response.status == 202
    assert again["event_id"] == queued["event_id"]
    assert again["event_type"] == "webhook.test"
    assert again["id"] != queued["id"]
    assert missing.status == 404
    assert missing_body["detail"] == "delivery not found: dlv_0000000000000000"


async def test_webhooks_deliveries_status_filter(owner):
    webhook = await create_webhook(owner, owner.app["id"])
    item = f"{WEBHOOKS}/{webhook['id']}"
    await owner.client.post(f"{item}/test", headers=owner.headers)

    pending = await owner.client.get(
        f"{item}/deliveries", params={"status": "pending"}, headers=owner.headers
    )
    delivered = await owner.client.get(
        f"{item}/deliveries", params={"status": "delivered"}, headers=owner.headers
    )
    invalid = await owner.client.get(
        f"{item}/deliveries", params={"status": "done"}, headers=owner.headers
    )
    invalid_body = await invalid.json()

    assert len(await pending.json()) == 1
    assert await delivered.json() == []
    assert invalid.status == 400
    assert invalid_body["detail"].startswith("status: must be one of pending")


async def test_webhooks_api_key_scopes(owner):
    reader = key_auth(await owner.create_api_key(owner.app["id"], ["webhooks:read"]))
    writer = key_auth(await owner.create_api_key(owner.app["id"], ["webhooks:write"]))

    created, body = await post_webhook(owner, headers=writer)
    denied, denied_body = await post_webhook(owner, headers=reader)
    listed = await owner.client.get(WEBHOOKS, headers=reader)
    listing_denied = await owner.client.get(WEBHOOKS, headers=writer)
    listing_body = await listing_denied.json()

    assert created.status == 201
    assert body["app_id"] == owner.app["id"]
    assert denied.status == 403
    assert "missing scope webhooks:write" in denied_body["detail"]
    assert listed.status == 200
    assert [item["id"] for item in await listed.json()] == [body["id"]]
    assert listing_denied.status == 403
    assert "missing scope webhooks:read" in listing_body["detail"]


async def test_webhooks_api_key_other_app_404(owner):
    other_app = await owner.create_app("Other app")
    webhook = await create_webhook(owner, other_app["id"])
    key = key_auth(await owner.create_api_key(owner.app["id"], list(key_store.SCOPES)))

    fetched = await owner.client.get(f"{WEBHOOKS}/{webhook['id']}", headers=key)
    listed = await owner.client.get(
        WEBHOOKS, params={"app_id": other_app["id"]}, headers=key
    )
    created, _ = await post_webhook(owner, headers=key, app_id=other_app["id"])

    assert fetched.status == 404
    assert listed.status == 404
    assert created.status == 404


async def test_webhooks_audit_entries(owner):
    webhook = await create_webhook(owner, owner.app["id"])
    item = f"{WEBHOOKS}/{webhook['id']}"
    await owner.client.put(
        item, json={"events": ["stream.offline"]}, headers=owner.headers
    )
    await owner.client.post(f"{item}/test", headers=owner.headers)
    await owner.client.delete(item, headers=owner.headers)
    await post_webhook(owner, events=["bogus"])
    await flush_audit(owner.client.app)

    response = await owner.client.get("/api/audit-logs", headers=owner.headers)
    entries = [e for e in await response.json() if e["resource_type"] == "webhook"]
    actions = [(e["action"], e["status"]) for e in reversed(entries)]

    assert actions == [
        ("create_webhook", "success"),
        ("update_webhook", "success"),
        ("test_webhook", "success"),
        ("delete_webhook", "success"),
        ("create_webhook", "failure"),
    ]
    assert entries[-1]["resource_id"] == webhook["id"]
    assert entries[-1]["app_id"] == owner.app["id"]
    assert all("whsec_" not in e["detail"] for e in entries)
