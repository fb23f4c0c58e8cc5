"""A webhook receiver for tests: a real aiohttp server on 127.0.0.1.

It checks both signatures of every request the way receivers do: the
``X-Webhook-Signature`` header with the API spec's own snippet, and the
Standard Webhooks headers with the ``standardwebhooks`` receiver library.
A request with a signature that does not verify gets 401 and is recorded
with ``verified`` False.

Tests choose the answers: ``statuses`` is a queue of status codes (200 once
it runs out), and ``hold`` makes requests wait until ``release`` is called.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


def verify_webhook(payload, signature, secret):
    """The verification snippet of the API spec, as a receiver would copy it."""
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, expected)


def library_secret(secret: str) -> str:
    """Return the secret as the Standard Webhooks libraries take it (docs/api.md)."""
    if secret.startswith("whsec_"):
        return secret
    return "whsec_" + base64.b64encode(secret.encode()).decode()


@dataclass
class ReceivedRequest:
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int | None = None

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def event_type(self) -> str:
        return self.payload["type"]


class Receiver:
    """Records webhook requests; start it with ``await receiver.start()``."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.requests: list[ReceivedRequest] = []
        self.statuses: list[int] = []
        self.hold = False
        self.entered = asyncio.Event()
        self._release = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, path: str = "/hooks/realcast") -> str:
        app = web.Application()
        app.router.add_post(path, self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{path}"
        return self.url

    async def close(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()

    def release(self) -> None:
        """Let held requests, and every later one, answer."""
        self._release.set()

    async def wait_for(
        self,
        condition: Callable[[list[ReceivedRequest]], bool],
        timeout: float = 30.0,
    ) -> list[ReceivedRequest]:
        """Wait until ``condition(requests)`` holds; return the requests."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: condition(self.requests)), timeout
            )
        return list(self.requests)

    async def wait_for_events(
        self, event_type: str, count: int = 1, timeout: float = 30.0
    ) -> list[ReceivedRequest]:
        """Wait for ``count`` requests of ``event_type``; return those requests."""
        requests = await self.wait_for(
            lambda found: sum(r.event_type == event_type for r in found) >= count,
            timeout,
        )
        return [request for request in requests if request.event_type == event_type]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        received = ReceivedRequest(headers, body, self._verify(headers, body))
        await self._record(received)
        if self.hold:
            self.entered.set()
            await self._release.wait()
        status = 401 if not received.verified else 200
        if received.verified and self.statuses:
            status = self.statuses.pop(0)
        received.status = status
        return web.Response(status=status, text=f"answered {status}")

    async def _record(self, received: ReceivedRequest) -> None:
        async with self._changed:
            self.requests.append(received)
            self._changed.notify_all()

    def _verify(self, headers: dict[str, str], body: bytes) -> bool:
        if self.secret is None:
            return False
        signature = headers.get("X-Webhook-Signature", "")
        if not verify_webhook(body.decode(), signature, self.secret):
            return False
        try:
            Webhook(library_secret(self.secret)).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True
