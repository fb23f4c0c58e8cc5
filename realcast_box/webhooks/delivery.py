"""One delivery attempt: a signed POST and what came back.

A 2xx response is a success. Anything else fails the attempt: another
status (redirects are not followed, so a moved receiver shows up in the
delivery log instead of leading the box somewhere else), a timeout, or a
network error. The first 1 KB of the response body is kept for the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from realcast_box import __version__
from realcast_box.webhooks.signing import signature_headers
from realcast_box.webhooks.urls import DeniedAddressError, DenyList, check_url

MAX_RESPONSE_BYTES = 1024
USER_AGENT = f"RealCast-Box/{__version__} (webhooks)"


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one POST: a status code, an error, or both."""

    status_code: int | None
    error: str | None
    response_body: str | None
    latency_ms: int
    # Seconds from the response's Retry-After header, when it had one.
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def gone(self) -> bool:
        """Whether the receiver responded with 410 Gone: it wants no more events."""
        return self.status_code == 410


@dataclass(frozen=True)
class Message:
    """The parts of a delivery that one attempt sends."""

    url: str
    secret: str
    event_id: str
    event_type: str
    delivery_id: str
    body: bytes


def request_headers(message: Message, timestamp: int) -> dict[str, str]:
    """Return the headers of an attempt sent at Unix time ``timestamp``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Webhook-Event": message.event_type,
        "X-Webhook-Delivery": message.delivery_id,
        **signature_headers(message.secret, message.event_id, timestamp, message.body),
    }


async def send_attempt(
    session: aiohttp.ClientSession,
    message: Message,
    *,
    timeout: float,
    deny_list: DenyList,
) -> AttemptResult:
    """POST ``message`` once and return the outcome.

    Error statuses, timeouts and aiohttp's network errors come back in the
    result instead of being raised.
    """
    try:
        check_url(message.url, deny_list)
    except ValueError as exc:
        return AttemptResult(None, f"url: {exc}", None, 0)
    headers = request_headers(message, int(time.time()))
    started = time.monotonic()
    try:
        async with session.post(
            message.url,
            data=message.body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            body = await _read_start(response)
            status = response.status
            location = response.headers.get("Location")
            retry_after = _retry_after(response.headers.get("Retry-After"))
    except TimeoutError:
        return AttemptResult(
            None, f"timed out after {timeout:g} s", None, _elapsed_ms(started)
        )
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, DeniedAddressError):
            error = str(exc.os_error)
        else:
            error = _client_error(exc)
        return AttemptResult(None, error, None, _elapsed_ms(started))
    except aiohttp.ClientError as exc:
        return AttemptResult(None, _client_error(exc), None, _elapsed_ms(started))
    latency = _elapsed_ms(started)
    text = body.decode("utf-8", "replace")
    if 200 <= status < 300:
        return AttemptResult(status, None, text, latency)
    if 300 <= status < 400:
        error = (
            f"HTTP {status}: redirects are not followed; set the webhook URL to"
            f" {location!r}"
            if location
            else f"HTTP {status}: redirects are not followed"
        )
    else:
        error = f"HTTP {status}"
    return AttemptResult(status, error, text, latency, retry_after)


async def _read_start(response: aiohttp.ClientResponse) -> bytes:
    """Read up to MAX_RESPONSE_BYTES of the body; the rest is never read."""
    data = b""
    while len(data) < MAX_RESPONSE_BYTES:
        chunk = await response.content.read(MAX_RESPONSE_BYTES - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _retry_after(value: str | None) -> float | None:
    """Parse a Retry-After header given in seconds; HTTP dates are ignored."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _client_error(exc: aiohttp.ClientError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
