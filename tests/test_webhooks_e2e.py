"""Webhook delivery end to end: a real box, real RTMP pushes, real receivers.

Each receiver (tests/webhook_receiver.py) is an aiohttp server on 127.0.0.1
that checks the X-Webhook-Signature header with the API spec's snippet and
the Standard Webhooks headers with that scheme's receiver library. Retries
are made fast with a small webhook_retry_base_seconds, and no test asserts
how long anything took.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from realcast_box.api.audit import AUDIT_WRITER
from realcast_box.app import DATABASE, create_app
from realcast_box.config import load_config
from realcast_box.live.session_events import UNFINISHED_SESSION_REASON
from realcast_box.store import streams as stream_store
from tests.box import Box, download_hls, start_box, start_publisher
from tests.webhook_receiver import Receiver

FAST_RETRIES = {"webhook_retry_base_seconds": 0.05, "reconnect_window_seconds": 0}
PASSWORD = "correct horse battery"


@pytest.fixture
async def receiver():
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.close()


@pytest.fixture
async def other_receiver():
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.close()


async def create_webhook(
    box: Box, receiver: Receiver, app_id: str, events: list[str], **fields
) -> dict:
    """Create a webhook to ``receiver`` and give the receiver its secret."""
    response = await box.client.post(
        "/api/webhooks",
        json={"app_id": app_id, "url": receiver.url, "events": events, **fields},
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    webhook = await response.json()
    receiver.secret = fields.get("secret") or webhook["secret"]
    return webhook


async def create_app_id(box: Box) -> str:
    response = await box.client.post(
        "/api/apps", json={"name": "Webhook app"}, headers=box.auth
    )
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


async def send_test(box: Box, webhook_id: str) -> dict:
    response = await box.client.post(
        f"/api/webhooks/{webhook_id}/test", headers=box.auth
    )
    assert response.status == 202, await response.text()
    return await response.json()


async def deliveries(box: Box, webhook_id: str) -> list[dict]:
    response = await box.client.get(
        f"/api/webhooks/{webhook_id}/deliveries", headers=box.auth
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def wait_for_delivery(
    box: Box, webhook_id: str, delivery_id: str, status: str, timeout: float = 30.0
) -> dict:
    """Poll the delivery log until the delivery has ``status``; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = [d for d in await deliveries(box, webhook_id) if d["id"] == delivery_id]
        if found and found[0]["status"] == status:
            return found[0]
        assert loop.time() < deadline, f"delivery never became {status}: {found}"
        await asyncio.sleep(0.05)


async def wait_for_attempts(
    box: Box, webhook_id: str, delivery_id: str, count: int, timeout: float = 30.0
) -> dict:
    """Poll the delivery log until ``count`` attempts are logged; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = [d for d in await deliveries(box, webhook_id) if d["id"] == delivery_id]
        if found and found[0]["attempt_count"] >= count:
            return found[0]
        assert loop.time() < deadline, f"delivery never had {count} attempts: {found}"
        await asyncio.sleep(0.05)


async def get_webhook(box: Box, webhook_id: str) -> dict:
    response = await box.client.get(f"/api/webhooks/{webhook_id}", headers=box.auth)
    assert response.status == 200, await response.text()
    return await response.json()


async def wait_for_webhook_status(
    box: Box, webhook_id: str, status: str, timeout: float = 30.0
) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        webhook = await get_webhook(box, webhook_id)
        if webhook["status"] == status:
            return webhook
        assert loop.time() < deadline, f"webhook never became {status}: {webhook}"
        await asyncio.sleep(0.05)


async def wait_for_security_event(
    box: Box, action: str, timeout: float = 30.0
) -> list[dict]:
    """Poll the security events until one has ``action``; return those."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await box.app[AUDIT_WRITER].flush()
        response = await box.client.get(
            "/api/audit-logs/security-events", headers=box.auth
        )
        found = [e for e in await response.json() if e["action"] == action]
        if found:
            return found
        assert loop.time() < deadline, f"no security event {action}"
        await asyncio.sleep(0.05)


async def restart_box(aiohttp_client, box: Box, **overrides) -> Box:
    """Stop ``box`` and start a new one on the same data directory; log in again."""
    await box.client.close()
    settings = {
        "data_dir": str(box.data_dir),
        "host": "127.0.0.1",
        "rtmp_port": 0,
        "rate_limit_per_minute": 100_000,
        "rate_limit_per_hour": 1_000_000,
        **overrides,
    }
    app = create_app(load_config(None, environ={}, overrides=settings))
    client = await aiohttp_client(app)
    response = await client.post(
        "/api/auth/login",
        json={"email": "publisher@example.com", "password": PASSWORD},
    )
    assert response.status == 200, await response.text()
    token = (await response.json())["access_token"]
    return Box(client, app, Path(box.data_dir), token)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


async def test_webhooks_stream_live_and_offline(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path, **FAST_RETRIES)
    stream = await box.create_stream("Launch party")
    webhook = await create_webhook(
        box, receiver, stream["app_id"], ["stream.live", "stream.offline"]
    )

    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "2"
    )
    await process.communicate()
    live = (await receiver.wait_for_events("stream.live"))[0]
    offline = (await receiver.wait_for_events("stream.offline"))[0]

    assert process.returncode == 0
    assert live.verified
    assert offline.verified
    assert live.payload["app_id"] == stream["app_id"]
    assert live.payload["stream_id"] == stream["id"]
    assert live.payload["data"]["title"] == "Launch party"
    assert live.payload["data"]["stream_key"] == stream["stream_key"]
    assert live.payload["data"]["client_ip"] == "127.0.0.1"
    assert live.payload["id"].startswith("evt_")
    assert live.headers["webhook-id"] == live.payload["id"]
    assert live.headers["X-Webhook-Event"] == "stream.live"
    assert live.headers["Content-Type"] == "application/json"
    assert offline.payload["data"]["session_id"] == live.payload["data"]["session_id"]
    assert offline.payload["data"]["duration_seconds"] >= 0
    assert offline.payload["id"] != live.payload["id"]
    log = await deliveries(box, webhook["id"])
    assert {entry["event_type"] for entry in log} == {"stream.live", "stream.offline"}
    for entry in log:
        await wait_for_delivery(box, webhook["id"], entry["id"], "delivered")


async def test_webhooks_offline_sent_for_session_left_by_crash(
    aiohttp_client, tmp_path, receiver
):
    box = await start_box(aiohttp_client, tmp_path, **FAST_RETRIES)
    stream = await box.create_stream()
    await create_webhook(box, receiver, stream["app_id"], ["stream.offline"])
    # A crash mid-session leaves the stream's row with status live.
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    await stream_store.mark_stream_live(box.app[DATABASE], stream["id"], started)

    box = await restart_box(aiohttp_client, box, **FAST_RETRIES)
    offline = (await receiver.wait_for_events("stream.offline"))[0]
    response = await box.client.get(f"/api/streams/{stream['id']}", headers=box.auth)

    assert offline.verified
    assert offline.payload["stream_id"] == stream["id"]
    assert offline.payload["data"]["session_id"] is None
    assert offline.payload["data"]["reason"] == UNFINISHED_SESSION_REASON
    assert offline.payload["data"]["duration_seconds"] >= 30
    assert (await response.json())["status"] == "offline"


async def test_webhooks_unsubscribed_event_not_sent(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path, **FAST_RETRIES)
    stream = await box.create_stream()
    webhook = await create_webhook(box, receiver, stream["app_id"], ["stream.offline"])

    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "1"
    )
    await process.communicate()
    await receiver.wait_for_events("stream.offline")

    assert [request.event_type for request in receiver.requests] == ["stream.offline"]
    assert len(await deliveries(box, webhook["id"])) == 1


async def test_webhooks_retry_after_500_once(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path, **FAST_RETRIES)
    app_id = await create_app_id(box)
    webhook = await create_webhook(box, receiver, app_id, ["webhook.test"])
    receiver.statuses = [500]

    queued = await send_test(box, webhook["id"])
    delivered = await wait_for_delivery(box, webhook["id"], queued["id"], "delivered")

    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first.verified
    assert second.verified
    assert first.payload == second.payload
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert delivered["attempt_count"] == 2
    assert [a["status_code"] for a in delivered["attempts"]] == [500, 200]
    assert delivered["attempts"][0]["error"] == "HTTP 500"
    assert delivered["attempts"][0]["response_body"] == "answered 500"
    assert delivered["attempts"][1]["error"] is None
    assert delivered["next_attempt_at"] is None


async def test_webhooks_restart_between_attempts(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path, webhook_retry_base_seconds=1.0)
    app_id = await create_app_id(box)
    webhook = await create_webhook(box, receiver, app_id, ["webhook.test"])
    receiver.statuses = [503] * 50

    queued = await send_test(box, webhook["id"])
    pending = await wait_for_attempts(box, webhook["id"], queued["id"], 1)
    box = await restart_box(aiohttp_client, box, webhook_retry_base_seconds=0.05)
    receiver.statuses = []
    delivered = await wait_for_delivery(box, webhook["id"], queued["id"], "delivered")

    assert pending["status"] == "pending"
    assert pending["attempts"][0]["status_code"] == 503
    # An attempt cut off by the stop is not logged and is sent again.
    assert len(receiver.requests) >= delivered["attempt_count"]
    assert delivered["attempts"][0]["status_code"] == 503
    assert delivered["attempts"][-1]["status_code"] == 200
    event_ids = {request.headers["webhook-id"] for request in receiver.requests}
    assert event_ids == {queued["event_id"]}
    assert all(request.verified for request in receiver.requests)


async def test_webhooks_hanging_receiver_isolated(
    aiohttp_client, tmp_path, receiver, other_receiver
):
    box = await start_box(
        aiohttp_client, tmp_path, webhook_timeout_seconds=120, **FAST_RETRIES
    )
    stream = await box.create_stream()
    hanging = await create_webhook(box, receiver, stream["app_id"], ["stream.live"])
    await create_webhook(box, other_receiver, stream["app_id"], ["stream.live"])
    receiver.hold = True

    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        await receiver.entered.wait()
        received = await other_receiver.wait_for_events("stream.live")
        still_hanging = [request.status for request in receiver.requests]
        receiver.release()
    finally:
        await stop_process(process)
    log = await deliveries(box, hanging["id"])
    await wait_for_delivery(box, hanging["id"], log[0]["id"], "delivered")

    assert received[0].verified
    assert still_hanging == [None]


async def test_webhooks_timeout_fails_attempt(aiohttp_client, tmp_path, receiver):
    box = await start_box(
        aiohttp_client,
        tmp_path,
        webhook_timeout_seconds=0.2,
        webhook_max_attempts=1,
        **FAST_RETRIES,
    )
    app_id = await create_app_id(box)
    webhook = await create_webhook(box, receiver, app_id, ["webhook.test"])
    receiver.hold = True

    queued = await send_test(box, webhook["id"])
    failed = await wait_for_delivery(box, webhook["id"], queued["id"], "failed")

    assert failed["attempts"][0]["status_code"] is None
    assert failed["attempts"][0]["error"] == "timed out after 0.2 s"
    assert failed["last_error"] == "timed out after 0.2 s"


async def test_webhooks_disabled_after_failures(aiohttp_client, tmp_path, receiver):
    box = await start_box(
        aiohttp_client,
        tmp_path,
        webhook_max_attempts=2,
        webhook_disable_after_failures=2,
        **FAST_RETRIES,
    )
    app_id = await create_app_id(box)
    webhook = await create_webhook(box, receiver, app_id, ["webhook.test"])
    receiver.statuses = [500] * 4

    first = await send_test(box, webhook["id"])
    await wait_for_delivery(box, webhook["id"], first["id"], "failed")
    after_one = await get_webhook(box, webhook["id"])
    second = await send_test(box, webhook["id"])
    disabled = await wait_for_webhook_status(box, webhook["id"], "disabled")
    refused = await box.client.post(
        f"/api/webhooks/{webhook['id']}/test", headers=box.auth
    )
    refused_body = await refused.json()
    disabled_events = await wait_for_security_event(box, "webhook_disabled")

    assert after_one["status"] == "active"
    assert after_one["consecutive_failures"] == 1
    second_failed = await wait_for_delivery(box, webhook["id"], second["id"], "failed")
    assert second_failed["attempt_count"] == 2
    assert disabled["consecutive_failures"] == 2
    assert "2 deliveries in a row failed" in disabled["disabled_reason"]
    assert disabled["disabled_at"] is not None
    assert refused.status == 409
    assert "PUT status 'active'" in refused_body["detail"]
    assert len(disabled_events) == 1
    assert disabled_events[0]["resource_id"] == webhook["id"]
    assert disabled_events[0]["app_id"] == app_id

    response = await box.client.put(
        f"/api/webhooks/{webhook['id']}", json={"status": "active"}, headers=box.auth
    )
    enabled = await response.json()
    third = await send_test(box, webhook["id"])
    delivered = await wait_for_delivery(box, webhook["id"], third["id"], "delivered")

    assert response.status == 200
    assert enabled["status"] == "active"
    assert enabled["consecutive_failures"] == 0
    assert enabled["disabled_reason"] is None
    assert delivered["attempt_count"] == 1


async def test_webhooks_gone_disables_at_once(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path, **FAST_RETRIES)
    app_id = await create_app_id(box)
    webhook = await create_webhook(box, receiver, app_id, ["webhook.test"])
    receiver.statuses = [410]

    queued = await send_test(box, webhook["id"])
    failed = await wait_for_delivery(box, webhook["id"], queued["id"], "failed")
    disabled = await wait_for_webhook_status(box, webhook["id"], "disabled")

    assert failed["attempt_count"] == 1
    assert len(receiver.requests) == 1
    assert disabled["disabled_reason"] == "the receiver answered 410 Gone"


async def test_webhooks_redeliver_same_event(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path, **FAST_RETRIES)
    app_id = await create_app_id(box)
    webhook = await create_webhook(box, receiver, app_id, ["webhook.test"])
    queued = await send_test(box, webhook["id"])
    await wait_for_delivery(box, webhook["id"], queued["id"], "delivered")

    response = await box.client.post(
        f"/api/webhooks/{webhook['id']}/deliveries/{queued['id']}/redeliver",
        headers=box.auth,
    )
    again = await response.json()
    await wait_for_delivery(box, webhook["id"], again["id"], "delivered")
    log = await deliveries(box, webhook["id"])

    assert response.status == 202
    assert again["id"] != queued["id"]
    assert again["event_id"] == queued["event_id"]
    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first.body == second.body
    assert second.verified
    assert second.headers["X-Webhook-Delivery"] == again["id"]
    assert [entry["id"] for entry in log] == [again["id"], queued["id"]]


async def test_webhooks_health_warning_event(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path, **FAST_RETRIES)
    stream = await box.create_stream()
    await create_webhook(box, receiver, stream["app_id"], ["stream.health.warning"])

    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]),
        "--seconds",
        "30",
        "--realtime",
        "--no-audio",
    )
    try:
        received = await receiver.wait_for_events("stream.health.warning")
    finally:
        await stop_process(process)

    payload = received[0].payload
    assert received[0].verified
    assert payload["stream_id"] == stream["id"]
    assert payload["data"]["code"] == "no_audio"
    assert "AAC" in payload["data"]["message"]
    assert payload["data"]["ingest"]["video_codec"] == "h264"
    assert len(received) == 1


async def test_webhooks_viewer_count_event(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path, **FAST_RETRIES)
    stream = await box.create_stream()
    await create_webhook(box, receiver, stream["app_id"], ["viewer.count.update"])
    path = f"/hls/{stream['id']}/index.m3u8"

    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while (await box.client.get(path)).status != 200:
            assert loop.time() < deadline, "the stream never became playable"
            await asyncio.sleep(0.1)
        await download_hls(box.client, path, tmp_path / "download")
        received = await receiver.wait_for_events("viewer.count.update")
    finally:
        await stop_process(process)

    data = received[0].payload["data"]
    assert received[0].verified
    assert data["viewer_count"] == 1
    assert data["total_views"] == 1
    assert received[0].payload["stream_id"] == stream["id"]


async def test_webhooks_deny_list_setting(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path, webhook_deny_list="127.0.0.0/8")
    app_id = await create_app_id(box)

    for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
        response = await box.client.post(
            "/api/webhooks",
            json={"app_id": app_id, "url": url, "events": ["stream.live"]},
            headers=box.auth,
        )
        body = await response.json()
        assert response.status == 400, body
        assert body["detail"].startswith("url: ")
        assert "127.0.0.1" in body["detail"]
