"""Request metrics: HTTP requests by route, and HLS requests by kind.

Labels name the route's pattern (``/api/streams/{stream_id}``), never the
requested path, so stream ids, keys and tokens in URLs never reach a label
and the number of series stays bounded by the route table. Requests under
/hls are counted by kind (playlist, init, segment, part) in metrics of their
own, because a blocking playlist reload would distort the API's latencies.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram

HLS_ROUTE = "/hls/{stream_id}/{path}"
# Label of a request that matched no route (a 404 or 405 from the router).
UNMATCHED_ROUTE = "unmatched"
# Any other method is labelled "other", so a client cannot add series by
# sending made-up methods.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PART_NAME = re.compile(r"part-[0-9]+\.[0-9]+\.m4s")
# Request keys under which the middleware leaves an /hls request's kind and
# start time for the response hook that counts it. aiohttp releases older
# than RequestKey take a plain string (and newer ones warn about it).
HLS_KIND_KEY: Any = (
    web.RequestKey("realcast_metrics_hls_kind", str)
    if hasattr(web, "RequestKey")
    else "realcast_metrics_hls_kind"
)
HLS_STARTED_KEY: Any = (
    web.RequestKey("realcast_metrics_hls_started", float)
    if hasattr(web, "RequestKey")
    else "realcast_metrics_hls_started"
)


class RequestMetrics:
    """The request counters and histograms of one application's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.http_requests = Counter(
            "realcast_http_requests",
            "HTTP requests answered, by method, route pattern and status"
            " (/hls not included).",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "realcast_http_request_duration_seconds",
            "Time from the start of handling to the response, by method and"
            " route pattern (/hls and WebSocket sessions not included).",
            ["method", "route"],
            registry=registry,
        )
        self.hls_requests = Counter(
            "realcast_hls_requests",
            "HLS requests answered, by kind and status.",
            ["kind", "status"],
            registry=registry,
        )
        self.hls_duration = Histogram(
            "realcast_hls_request_duration_seconds",
            "Time from the start of handling to the response of HLS requests,"
            " blocking playlist reloads included, by kind.",
            ["kind"],
            registry=registry,
        )
        self.hls_bytes = Counter(
            "realcast_hls_response_bytes",
            "Body bytes of HLS responses by kind, as their Content-Length"
            " states (HEAD and 304 responses count 0).",
            ["kind"],
            registry=registry,
        )
        # Labelled children of the HLS metrics, looked up once per label
        # values: labels() takes a lock and builds a key on every call, which
        # showed in profiles of HLS serving. Kinds and statuses are few.
        self.hls_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self.hls_bytes_children: dict[str, Counter] = {}


def route_label(request: web.Request) -> str:
    """Return the pattern of the route that matched, or UNMATCHED_ROUTE."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def hls_kind(relative: str) -> str:
    """Return the kind of the HLS file at ``relative`` below the stream's folder."""
    # String operations in place of PurePosixPath, because this runs on
    # every /hls request. They take the name and suffix as it does.
    name = relative.rpartition("/")[2]
    if name in ("", "."):
        names = [part for part in relative.split("/") if part not in ("", ".")]
        name = names[-1] if names else ""
    dot = name.rfind(".")
    suffix = name[dot:] if 0 < dot < len(name) - 1 else ""
    if suffix == ".m3u8":
        return "playlist"
    if suffix == ".mp4":
        return "init"
    if suffix == ".m4s":
        # NOTE: this must match the names that the low-latency packager
        # gives partial segments, part-N.K.m4s (part K of segment N).
        return "part" if PART_NAME.fullmatch(name) else "segment"
    return "other"


def make_middleware(metrics: RequestMetrics) -> Middleware:
    """Return the middleware that counts and times every request.

    It must be the outermost middleware, so that it counts the status of the
    JSON error responses that the error middleware makes of exceptions.
    /hls requests are only marked here: the response hook counts them when
    their headers go out, because a file response picks its status (206,
    304, 416) only then, and a player that leaves a blocked reload gets no
    response to count.
    """

    @web.middleware
    async def request_metrics_middleware(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        route = route_label(request)
        started = time.perf_counter()
        if route == HLS_ROUTE:
            mark_hls_request(request, started)
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _record(metrics, request, route, exc.status, started)
            raise
        except Exception:
            _record(metrics, request, route, 500, started)
            raise
        timed = not isinstance(response, web.WebSocketResponse)
        _record(metrics, request, route, response.status, started, timed=timed)
        return response

    return request_metrics_middleware


def mark_hls_request(request: web.Request, started: float) -> None:
    """Mark an /hls request for the response hook, which counts it.

    ``started`` is its ``time.perf_counter()`` when it arrived. The HLS
    front door (hls/front.py) calls this for the requests it serves itself.
    """
    request[HLS_KIND_KEY] = hls_kind(request.match_info.get("path", ""))
    request[HLS_STARTED_KEY] = started


def _record(
    metrics: RequestMetrics,
    request: web.Request,
    route: str,
    status: int,
    started: float,
    *,
    timed: bool = True,
) -> None:
    elapsed = time.perf_counter() - started
    method = method_label(request.method)
    metrics.http_requests.labels(method, route, str(status)).inc()
    if timed:
        metrics.http_duration.labels(method, route).observe(elapsed)


def make_response_hook(
    metrics: RequestMetrics,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """Return the on_response_prepare hook that counts HLS responses.

    Each is counted when its headers go out, because a file response learns
    its status and length (of the whole file or of the requested range)
    only then.
    """

    async def count_hls_response(
        request: web.Request, response: web.StreamResponse
    ) -> None:
        kind = request.get(HLS_KIND_KEY)
        if kind is None:
            return
        elapsed = time.perf_counter() - request[HLS_STARTED_KEY]
        status = response.status
        children = metrics.hls_children.get((kind, status))
        if children is None:
            children = (
                metrics.hls_requests.labels(kind, str(status)),
                metrics.hls_duration.labels(kind),
            )
            metrics.hls_children[(kind, status)] = children
        children[0].inc()
        children[1].observe(elapsed)
        if request.method == "HEAD":
            return
        length = response.content_length
        if length:
            child = metrics.hls_bytes_children.get(kind)
            if child is None:
                child = metrics.hls_bytes.labels(kind)
                metrics.hls_bytes_children[kind] = child
            child.inc(length)

    return count_hls_response
