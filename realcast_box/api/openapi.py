"""The OpenAPI 3.1 document of the REST API, served at /api/openapi.json.

The document covers every route under /api and the /healthz check. It
leaves out the HLS files under /hls, which players fetch as RFC 8216
playlists and segments rather than JSON; docs/api.md describes them.
/api/docs renders the document as an HTML page (realcast_box.api.apidocs).
The paths are built in openapi_paths, and the schemas and shared responses
in openapi_schemas.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from aiohttp import web

from realcast_box import __version__
from realcast_box.api import apidocs
from realcast_box.api.openapi_chat import CHAT_TAG, chat_paths, chat_schemas
from realcast_box.api.openapi_paths import paths
from realcast_box.api.openapi_recordings import (
    RECORDINGS_TAG,
    recording_paths,
    recording_schemas,
)
from realcast_box.api.openapi_schemas import (
    JSON,
    error_responses,
    headers,
    schemas,
    security_schemes,
)
from realcast_box.api.openapi_webhooks import (
    WEBHOOKS_TAG,
    outgoing_webhooks,
    webhook_paths,
    webhook_schemas,
)

routes = web.RouteTableDef()

OPENAPI_VERSION = "3.1.0"

DESCRIPTION = """\
REST API of a RealCast Box, and its health check. HLS playback under /hls
and recordings under /vod are not part of this document.

Requests authenticate as a user, with an access token from POST
/api/auth/login sent as `Authorization: Bearer TOKEN`, or as an API key,
sent as HTTP Basic credentials `api_key:api_secret`. An API key reaches its
own app alone and needs the scope that its security requirement lists.

Every error has the JSON body `{"detail": ..., "status_code": ...}`. A
method that a path does not list gets 405 with an `Allow` header. Every GET
path also accepts HEAD, which returns the same status and headers without a
body. Every /api response carries the X-RateLimit-* headers of the limit
closest to running out.
"""


def build_document() -> dict[str, Any]:
    """Return a new copy of the OpenAPI document of the box's HTTP port."""
    return copy.deepcopy(_document())


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "RealCast Box API",
            "version": __version__,
            "description": DESCRIPTION,
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"basicAuth": []}],
        "tags": [
            {"name": "auth", "description": "Users and access tokens."},
            {"name": "apps", "description": "Apps, which group streams."},
            {"name": "streams", "description": "Live streams and their keys."},
            {
                "name": "transcoding-profiles",
                "description": "Ladders of qualities that streams select.",
            },
            {"name": "system", "description": "The box's H.264 encoders."},
            {"name": "api-keys", "description": "API keys with scopes."},
            {"name": "audit-logs", "description": "Audit log and security events."},
            WEBHOOKS_TAG,
            RECORDINGS_TAG,
            CHAT_TAG,
            {"name": "meta", "description": "This document and the health check."},
        ],
        "paths": {**paths(), **webhook_paths(), **recording_paths(), **chat_paths()},
        "webhooks": outgoing_webhooks(),
        "components": {
            "schemas": {
                **schemas(),
                **webhook_schemas(),
                **recording_schemas(),
                **chat_schemas(),
            },
            "responses": error_responses(),
            "headers": headers(),
            "securitySchemes": security_schemes(),
        },
    }


@functools.cache
def _document_bytes() -> bytes:
    return json.dumps(_document(), indent=2).encode()


@functools.cache
def _docs_page() -> str:
    return apidocs.render(_document())


@routes.get("/api/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_document_bytes(), content_type=JSON)


@routes.get("/api/docs")
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_docs_page(), content_type="text/html")
