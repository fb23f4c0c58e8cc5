"""Prometheus metrics at /metrics.

Each application has a registry of its own (not prometheus_client's global
one), so several boxes in one process keep separate figures. Events are
counted as they happen by the request middleware (realcast_box.metrics.http),
and the box's live state is read at scrape time (realcast_box.metrics.live).

The endpoint is open unless ``metrics_token`` is set; then it requires
``Authorization: Bearer <metrics_token>``. ``metrics_enabled`` false
removes the route and the middleware.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from realcast_box.api.errors import ApiError
from realcast_box.appkeys import CONFIG, DATABASE
from realcast_box.metrics.http import (
    RequestMetrics,
    make_middleware,
    make_response_hook,
)
from realcast_box.metrics.live import LiveStateCollector
from realcast_box.store import webhooks as webhook_store
from realcast_box.store.db import StoreError

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
TOKEN_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


@dataclass
class Metrics:
    """One application's registry and the collectors registered in it."""

    registry: CollectorRegistry
    requests: RequestMetrics
    live: LiveStateCollector
    # Set while the outbox cannot be counted, so the failure is logged once.
    outbox_failing: bool = False


METRICS = web.AppKey("metrics", Metrics)


def setup_metrics(app: web.Application) -> None:
    """Add /metrics, the request middleware and the HLS response hook to ``app``.

    Call it after every other middleware is added: the request middleware
    goes first in the list, outside the error middleware, so that it counts
    the status of the error responses. Does nothing when metrics_enabled is
    false.
    """
    if not app[CONFIG].metrics_enabled:
        return
    registry = CollectorRegistry()
    requests = RequestMetrics(registry)
    live = LiveStateCollector(app)
    registry.register(live)
    app[METRICS] = Metrics(registry, requests, live)
    app.middlewares.insert(0, make_middleware(requests))
    app.on_response_prepare.append(make_response_hook(requests))
    app.router.add_get(METRICS_PATH, serve_metrics)


async def serve_metrics(request: web.Request) -> web.Response:
    """Return every metric in the format that the Accept header requests.

    Without an Accept header that names OpenMetrics or a newer text format,
    the format is Prometheus text 0.0.4.
    """
    _check_token(request, request.app[CONFIG].metrics_token)
    metrics = request.app[METRICS]
    await _count_outbox(request.app, metrics)
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(metrics.registry)
    headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
    return web.Response(body=body, headers=headers)


def _check_token(request: web.Request, token: str) -> None:
    """Raise a 401 ApiError unless ``token`` is empty or the request carries it."""
    if not token:
        return
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise ApiError(
            401,
            "missing credentials: /metrics requires the header"
            " 'Authorization: Bearer <metrics_token>'",
            headers=TOKEN_CHALLENGE,
        )
    # aiohttp keeps header bytes that are not UTF-8 as lone surrogates, which
    # a strict encode would turn into a 500.
    presented = credentials.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(presented, token.encode()):
        raise ApiError(
            401,
            "invalid metrics token: send the value of the metrics_token setting",
            headers=TOKEN_CHALLENGE,
        )


async def _count_outbox(app: web.Application, metrics: Metrics) -> None:
    """Store the webhook outbox's depth on the collector, or None on failure."""
    database = app.get(DATABASE)
    if database is None:
        metrics.live.outbox_pending = None
        return
    try:
        pending = await webhook_store.count_pending_deliveries(database)
    except (StoreError, sqlite3.Error) as exc:
        if not metrics.outbox_failing:
            logger.warning(
                "metrics: failed to count the webhook outbox: %s. The metric is"
                " left out until the count works",
                exc,
            )
        metrics.outbox_failing = True
        metrics.live.outbox_pending = None
        return
    metrics.outbox_failing = False
    metrics.live.outbox_pending = pending
