"""Rate limits: the fixed-window counter and the /api middleware."""

from __future__ import annotations

import aiohttp

from realcast_box.api.audit import AUDIT_WRITER
from realcast_box.api.ratelimit import OVERFLOW_KEY, Limit, RateLimiter
from realcast_box.appkeys import DATABASE
from tests.box import start_box


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


PER_MINUTE = Limit("standard", 3, 60)
PER_HOUR = Limit("standard", 5, 3600)


def test_ratelimit_counts_down_then_rejects():
    limiter = RateLimiter(clock=FakeClock())
    remaining = [limiter.hit("user:a", [PER_MINUTE]).remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    decision = limiter.hit("user:a", [PER_MINUTE])
    assert not decision.allowed
    assert decision.remaining == 0


def test_ratelimit_reset_and_retry_after():
    clock = FakeClock(1_000_000.0)  # 40 s into a minute window
    limiter = RateLimiter(clock=clock)
    for _ in range(3):
        limiter.hit("user:a", [PER_MINUTE])
    decision = limiter.hit("user:a", [PER_MINUTE])
    assert decision.reset == 1_000_020
    assert decision.retry_after == 20


def test_ratelimit_new_window_starts_fresh():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(4):
        limiter.hit("user:a", [PER_MINUTE])
    clock.now += 60
    assert limiter.hit("user:a", [PER_MINUTE]).allowed


def test_ratelimit_identities_counted_apart():
    limiter = RateLimiter(clock=FakeClock())
    for _ in range(3):
        limiter.hit("user:a", [PER_MINUTE])
    assert limiter.hit("user:b", [PER_MINUTE]).allowed
    assert not limiter.hit("user:a", [PER_MINUTE]).allowed


def test_ratelimit_hourly_limit_spans_minutes():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    allowed = []
    for _ in range(4):
        allowed += [limiter.hit("k", [PER_MINUTE, PER_HOUR]).allowed for _ in range(2)]
        clock.now += 60
    assert allowed.count(True) == 5
    decision = limiter.hit("k", [PER_MINUTE, PER_HOUR])
    assert not decision.allowed
    assert decision.limit == PER_HOUR


def test_ratelimit_reports_tightest_limit():
    limiter = RateLimiter(clock=FakeClock())
    stream_minute = Limit("stream", 2, 60)
    decision = limiter.hit("k", [PER_MINUTE, PER_HOUR, stream_minute])
    assert decision.limit == stream_minute
    assert decision.remaining == 1


def test_ratelimit_rejected_request_not_counted():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(10):
        limiter.hit("k", [PER_MINUTE, PER_HOUR])
    clock.now += 60
    # Only the three allowed requests of the first minute used the hour.
    assert limiter.hit("k", [PER_MINUTE, PER_HOUR]).remaining == 1


def test_ratelimit_table_size_bounded():
    limiter = RateLimiter(max_keys=10, clock=FakeClock())
    for index in range(10):
        limiter.hit(f"address:{index}", [PER_MINUTE])
    # New identities beyond the cap share one overflow counter.
    results = [limiter.hit(f"address:new{index}", [PER_MINUTE]) for index in range(4)]
    assert [result.allowed for result in results] == [True, True, True, False]
    table = limiter._tables[("standard", 60)][1]
    assert len(table) == 11
    assert OVERFLOW_KEY in table


async def register_and_login(client, email="rate@example.com"):
    account = {"email": email, "password": "long enough pw"}
    await client.post("/api/auth/register", json=account)
    response = await client.post("/api/auth/login", json=account)
    return {"Authorization": f"Bearer {(await response.json())['access_token']}"}


async def test_ratelimit_headers_on_every_api_response(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    for path in ("/api/auth/me", "/api/apps", "/api/no-such-route"):
        response = await box.client.get(path, headers=box.auth)
        assert "X-RateLimit-Limit" in response.headers, path
        assert "X-RateLimit-Remaining" in response.headers, path
        assert "X-RateLimit-Reset" in response.headers, path
    response = await box.client.get("/api/auth/me")
    assert response.status == 401
    assert "X-RateLimit-Limit" in response.headers
    response = await box.client.get("/healthz")
    assert "X-RateLimit-Limit" not in response.headers


async def test_ratelimit_standard_limit_429(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, rate_limit_per_minute=8)
    statuses = []
    for _ in range(10):
        response = await box.client.get("/api/apps", headers=box.auth)
        statuses.append(response.status)
    assert 429 in statuses
    assert response.status == 429
    body = await response.json()
    assert body["status_code"] == 429
    assert body["detail"] == "Rate limit exceeded. Maximum 8 requests per minute."
    assert 1 <= body["retry_after"] <= 60
    assert response.headers["Retry-After"] == str(body["retry_after"])
    assert response.headers["X-RateLimit-Remaining"] == "0"

    # Another identity (a second user) still has its own budget.
    other = await register_and_login(box.client)
    response = await box.client.get("/api/apps", headers=other)
    assert response.status in (200, 429)


async def test_ratelimit_stream_operations_429(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, stream_rate_limit_per_minute=2)
    response = await box.client.post(
        "/api/apps", json={"name": "limits"}, headers=box.auth
    )
    app_id = (await response.json())["id"]
    statuses = []
    for index in range(3):
        response = await box.client.post(
            "/api/streams",
            json={"app_id": app_id, "title": f"s{index}"},
            headers=box.auth,
        )
        statuses.append(response.status)
    assert statuses == [201, 201, 429]
    assert (await response.json())["detail"].endswith("2 requests per minute.")
    # Reads are not stream operations.
    response = await box.client.get("/api/streams", headers=box.auth)
    assert response.status == 200


async def test_ratelimit_login_per_email(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, login_rate_limit_per_minute=3)
    wrong = {"email": "publisher@example.com", "password": "wrong password"}
    statuses = []
    for _ in range(4):
        response = await box.client.post("/api/auth/login", json=wrong)
        statuses.append(response.status)
    assert statuses[-1] == 429
    assert statuses.count(401) + statuses.count(200) <= 3


async def test_ratelimit_login_email_across_addresses(aiohttp_client, tmp_path):
    # A second loopback address shows that the email limit holds on its own,
    # not only through the per-address limit.
    box = await start_box(aiohttp_client, tmp_path, login_rate_limit_per_minute=3)
    target = {"email": "publisher@example.com", "password": "wrong password"}
    # start_box logged in once already, so two more attempts reach the limit.
    for _ in range(2):
        response = await box.client.post("/api/auth/login", json=target)
        assert response.status == 401

    url = box.client.make_url("/api/auth/login")
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other_address:
        async with other_address.post(url, json=target) as response:
            assert response.status == 429
            assert (await response.json())["retry_after"] >= 1
        other = {"email": "someone@example.com", "password": "wrong password"}
        async with other_address.post(url, json=other) as response:
            assert response.status == 401, await response.text()


def test_ratelimit_first_rejection_once_per_window():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(3):
        limiter.hit("user:a", [PER_MINUTE])
    rejected = limiter.hit("user:a", [PER_MINUTE])
    assert limiter.first_rejection("user:a", rejected)
    assert not limiter.first_rejection("user:a", rejected)
    assert limiter.first_rejection("user:b", rejected)
    clock.now += 60
    assert limiter.first_rejection("user:a", rejected)


async def test_ratelimit_repeated_429_records_one_event(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, rate_limit_per_minute=3)
    for _ in range(8):
        response = await box.client.get("/api/apps", headers=box.auth)
    assert response.status == 429
    audit = box.app[AUDIT_WRITER]
    await audit.flush()
    database = box.app[DATABASE]
    rows = await database.fetchall(
        "SELECT action FROM audit_logs WHERE action = 'rate_limit_exceeded'"
    )
    assert len(rows) == 1
