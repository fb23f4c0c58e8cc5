"""JSON errors for every failed request: ``{"detail": ..., "status_code": ...}``.

``error_middleware`` turns ApiError, aiohttp's HTTP exceptions (404 for an
unknown path, 405 with its Allow header, 413) and unexpected exceptions
(logged, returned as a generic 500) into that shape, for every path of
the application, not only /api.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from realcast_box.errors import RealcastError

logger = logging.getLogger(__name__)

# Headers of an aiohttp HTTPException that describe its text body, which the
# JSON body replaces.
_BODY_HEADERS = frozenset({"content-type", "content-length"})


class ApiError(RealcastError):
    """An error response: HTTP ``status``, a ``detail`` message, extra headers.

    ``fields`` adds members to the JSON body, such as ``retry_after`` of 429.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.fields = dict(fields or {})


def error_response(
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
    fields: Mapping[str, object] | None = None,
) -> web.Response:
    body = {"detail": detail, "status_code": status, **(fields or {})}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        response = response_for_exception(request, exc)
        if response is None:
            raise
        return response


def response_for_exception(request: web.Request, exc: Exception) -> web.Response | None:
    """Return the JSON error response for ``exc``, logging it as the middleware does.

    None for an aiohttp HTTPException below 400 (a redirect), which the
    caller raises again. Also used by the HLS front door (hls/front.py),
    which serves requests outside aiohttp's middlewares.
    """
    if isinstance(exc, ApiError):
        _log_client_error(request, exc.status, exc.detail)
        return error_response(exc.status, exc.detail, exc.headers, exc.fields)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        detail = _http_exception_detail(request, exc)
        _log_client_error(request, exc.status, detail)
        headers = {
            name: value
            for name, value in exc.headers.items()
            if name.lower() not in _BODY_HEADERS
        }
        return error_response(exc.status, detail, headers)
    logger.error(
        "unhandled error in %s %r",
        request.method,
        request.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(500, "internal server error")


def _http_exception_detail(request: web.Request, exc: web.HTTPException) -> str:
    # aiohttp's default text is "404: Not Found". A handler's own text is kept.
    if exc.text and exc.text != f"{exc.status}: {exc.reason}":
        return exc.text
    if isinstance(exc, web.HTTPNotFound):
        return f"not found: {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return (
            f"method {request.method} is not allowed on {request.path}"
            f" (allowed: {allowed})"
        )
    return exc.reason.lower()


def _log_client_error(request: web.Request, status: int, detail: str) -> None:
    if status == 429:
        return  # the rate limiter logs the first rejection of each window
    # repr() escapes control characters, so a crafted path or field name
    # cannot forge log lines.
    logger.info("%s %r -> %d %r", request.method, request.path, status, detail)
