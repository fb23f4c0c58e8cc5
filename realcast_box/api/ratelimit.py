"""Request rate limits for the REST API.

Every /api request counts against its identity: the user of a valid access
token, the API key of valid Basic credentials, or else the client address.
Stream operations also count against a tighter limit, and login attempts
count per email address and per client address against password guessing.

Counters use fixed windows aligned to the clock (each minute, each hour), so
``X-RateLimit-Reset`` is the same for every client and a counter table can
be dropped whole when its window ends. Each table contains at most
``max_keys`` identities; identities beyond that share one overflow counter,
so a flood of new client addresses cannot grow memory without bound.

The client address is the TCP peer, or the X-Forwarded-For client when the
peer is one of trusted_proxies (see client_address.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from realcast_box.api.audit import record_security_event
from realcast_box.api.client_address import client_ip
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import authenticate
from realcast_box.appkeys import CONFIG

logger = logging.getLogger(__name__)

OVERFLOW_KEY = "overflow"
DEFAULT_MAX_KEYS = 100_000
PERIOD_NAMES = {60: "minute", 3600: "hour"}

# Routes whose requests also count as stream operations, by method and the
# route's canonical path.
STREAM_OPERATIONS = frozenset(
    {
        ("POST", "/api/streams"),
        ("PUT", "/api/streams/{stream_id}"),
        ("DELETE", "/api/streams/{stream_id}"),
        ("POST", "/api/streams/{stream_id}/reset-key"),
        ("POST", "/api/streams/{stream_id}/playback-token"),
        ("POST", "/api/streams/{stream_id}/playback-token/revoke"),
    }
)
LOGIN_ROUTE = ("POST", "/api/auth/login")


@dataclass(frozen=True)
class Limit:
    """At most ``count`` requests per ``period`` seconds, counted under ``name``."""

    name: str
    count: int
    period: int

    def describe(self) -> str:
        unit = PERIOD_NAMES.get(self.period, f"{self.period} seconds")
        return f"Maximum {self.count} requests per {unit}."


@dataclass(frozen=True)
class Decision:
    """Outcome of one request against its limits, and the header values."""

    allowed: bool
    limit: Limit
    remaining: int
    reset: int  # Unix time, in seconds, when the reported window ends
    retry_after: int  # seconds until the request would be allowed; 0 if allowed

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit.count),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class RateLimiter:
    """Fixed-window counters for many limits and identities, bounded in size."""

    def __init__(
        self,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_keys = max_keys
        self._clock = clock
        # (limit name, period) -> (window number, counts by identity)
        self._tables: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}

    def hit(self, key: str, limits: Sequence[Limit]) -> Decision:
        """Count one request by ``key`` unless one of ``limits`` is exhausted.

        A rejected request is not counted. The decision reports the limit with
        the fewest requests left, or the exhausted one that frees up last.
        """
        now = self._clock()
        counts = [self._counts(limit, now) for limit in limits]
        slots = [self._slot(table, key) for table in counts]
        used = [table.get(slot, 0) for table, slot in zip(counts, slots, strict=True)]

        exhausted = [
            (self._reset(limit, now), limit)
            for limit, count in zip(limits, used, strict=True)
            if count >= limit.count
        ]
        if exhausted:
            reset, limit = max(exhausted, key=lambda item: item[0])
            retry_after = max(1, math.ceil(reset - now))
            return Decision(False, limit, 0, reset, retry_after)

        for table, slot in zip(counts, slots, strict=True):
            table[slot] = table.get(slot, 0) + 1
        remaining = [
            (limit.count - count - 1, limit.period, limit)
            for limit, count in zip(limits, used, strict=True)
        ]
        left, _, limit = min(remaining, key=lambda item: (item[0], item[1]))
        return Decision(True, limit, left, self._reset(limit, now), 0)

    def _counts(self, limit: Limit, now: float) -> dict[str, int]:
        window = int(now // limit.period)
        table_key = (limit.name, limit.period)
        current = self._tables.get(table_key)
        if current is None or current[0] != window:
            current = (window, {})
            self._tables[table_key] = current
        return current[1]

    def first_rejection(self, key: str, decision: Decision) -> bool:
        """Return True only for the first rejection of ``key`` in its window.

        Rejections past the first are neither logged nor recorded, so a
        client that keeps hammering cannot fill the log or the audit table.
        """
        marker = Limit(f"rejected:{decision.limit.name}", 1, decision.limit.period)
        table = self._counts(marker, self._clock())
        slot = self._slot(table, key)
        if table.get(slot):
            return False
        table[slot] = 1
        return True

    def _slot(self, table: dict[str, int], key: str) -> str:
        if key in table or len(table) < self._max_keys:
            return key
        return OVERFLOW_KEY

    @staticmethod
    def _reset(limit: Limit, now: float) -> int:
        return (int(now // limit.period) + 1) * limit.period


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


def request_limits(request: web.Request) -> list[Limit]:
    """Return the limits that apply to ``request`` under the box's config."""
    config = request.app[CONFIG]
    limits = [
        Limit("standard", config.rate_limit_per_minute, 60),
        Limit("standard", config.rate_limit_per_hour, 3600),
    ]
    if _route(request) in STREAM_OPERATIONS:
        limits += [
            Limit("stream", config.stream_rate_limit_per_minute, 60),
            Limit("stream", config.stream_rate_limit_per_hour, 3600),
        ]
    return limits


async def identity_key(request: web.Request) -> str:
    """Return the counter key of the request's identity.

    Credentials that do not verify count against the client address, so
    a client cannot use up another identity's limit by naming it.
    """
    address = f"address:{client_ip(request) or 'unknown'}"
    if "Authorization" not in request.headers:
        return address
    try:
        identity = await authenticate(request)
    except ApiError:
        return address
    if identity.is_api_key:
        return f"api_key:{identity.key_id}"
    return f"user:{identity.user_id}"


def _route(request: web.Request) -> tuple[str, str]:
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    return request.method, canonical


class RateLimited(ApiError):
    """A 429 with the spec's ``retry_after`` member and the rate-limit headers."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(
            429,
            f"Rate limit exceeded. {decision.limit.describe()}",
            headers={**decision.headers(), "Retry-After": str(decision.retry_after)},
            fields={"retry_after": decision.retry_after},
        )
        self.decision = decision


async def reject(request: web.Request, key: str, decision: Decision) -> RateLimited:
    """Return the 429 of a rejected request, recording the first per window."""
    if not request.app[RATE_LIMITER].first_rejection(key, decision):
        return RateLimited(decision)
    logger.info(
        "%s %r -> 429 (%s, retry after %d s)",
        request.method,
        request.path,
        decision.limit.describe(),
        decision.retry_after,
    )
    try:
        await record_security_event(
            request.app,
            request,
            "rate_limit_exceeded",
            f"rate limit exceeded: {decision.limit.describe()}",
        )
    except Exception:
        logger.exception("failed to record a rate-limit security event")
    return RateLimited(decision)


def _login_limit(request: web.Request) -> Limit:
    return Limit("login", request.app[CONFIG].login_rate_limit_per_minute, 60)


async def limit_login_email(request: web.Request, email: str) -> None:
    """Count a login attempt for ``email``; raises RateLimited past the limit.

    The login handler calls this once it has parsed the body, because the
    middleware must not consume the request body.
    """
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None:
        return
    key = f"email:{email.strip().lower()}"
    decision = limiter.hit(key, [_login_limit(request)])
    if not decision.allowed:
        raise await reject(request, key, decision)


@web.middleware
async def rate_limit_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Apply the limits to /api requests and add the X-RateLimit headers."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    limiter = request.app[RATE_LIMITER]

    key = await identity_key(request)
    decision = limiter.hit(key, request_limits(request))
    if decision.allowed and _route(request) == LOGIN_ROUTE:
        key = f"address:{client_ip(request) or 'unknown'}"
        decision = limiter.hit(key, [_login_limit(request)])
    if not decision.allowed:
        raise await reject(request, key, decision)

    headers = decision.headers()
    try:
        response = await handler(request)
    except ApiError as exc:
        for name, value in headers.items():
            exc.headers.setdefault(name, value)
        raise
    except web.HTTPException as exc:
        exc.headers.update(headers)
        raise
    response.headers.update(headers)
    return response


def setup_rate_limits(app: web.Application, limiter: RateLimiter | None = None) -> None:
    """Install the rate limiter; call after setup_api so errors become JSON."""
    app[RATE_LIMITER] = limiter or RateLimiter()
    app.middlewares.append(rate_limit_middleware)
