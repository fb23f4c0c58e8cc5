"""The CORS policy of the /hls and /vod responses and of the chat socket.

The ``hls_cors_origins`` setting lists the origins whose scripts may read
HLS responses, or is ``*`` for any origin. It is a module of its own so
that the API package can read the policy without importing the HLS routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from realcast_box.errors import StartupError

ORIGIN_PATTERN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s,]+")
CORS_METHODS = "GET, HEAD, OPTIONS"
CORS_REQUEST_HEADERS = "Range, Authorization"
CORS_EXPOSED_HEADERS = "Content-Length, Content-Range, Accept-Ranges, ETag"
CORS_MAX_AGE_SECONDS = 86400


@dataclass(frozen=True)
class CorsPolicy:
    """Origins whose scripts may read /hls responses; None allows any."""

    origins: frozenset[str] | None

    def headers(self, origin: str | None, *, preflight: bool = False) -> dict[str, str]:
        """Return the CORS headers of a response to a request from ``origin``.

        The methods and request headers that scripts may use matter only
        to browsers' preflight requests, so only ``preflight`` responses
        list them.
        """
        if preflight:
            allowed = {
                "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_REQUEST_HEADERS,
                "Access-Control-Expose-Headers": CORS_EXPOSED_HEADERS,
            }
        else:
            allowed = {"Access-Control-Expose-Headers": CORS_EXPOSED_HEADERS}
        if self.origins is None:
            return {"Access-Control-Allow-Origin": "*", **allowed}
        # The response depends on the Origin header, so caches must key on it.
        headers = {"Vary": "Origin"}
        if origin is not None and origin.lower() in self.origins:
            headers["Access-Control-Allow-Origin"] = origin
            headers.update(allowed)
        return headers


HLS_CORS = web.AppKey("hls_cors", CorsPolicy)


def parse_cors_origins(value: str) -> CorsPolicy:
    """Parse the hls_cors_origins setting: "*" or comma-separated origins.

    Raises StartupError naming the setting for a value that is not an
    origin such as ``https://example.com`` or ``http://10.0.0.5:3000``.
    """
    if value.strip() == "*":
        return CorsPolicy(None)
    origins = set()
    for item in value.split(","):
        origin = item.strip().lower().rstrip("/")
        if not ORIGIN_PATTERN.fullmatch(origin):
            raise StartupError(
                f"invalid value {value!r} for hls_cors_origins: {item.strip()!r} is"
                ' not an origin; expected "*" or a comma-separated list of'
                ' origins such as "https://example.com,http://10.0.0.5:3000"'
            )
        origins.add(origin)
    return CorsPolicy(frozenset(origins))
