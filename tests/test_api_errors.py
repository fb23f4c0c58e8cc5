"""Tests for the JSON error middleware and request body checks."""

from __future__ import annotations

import io
import logging

import pytest
from aiohttp import web

from realcast_box.api.errors import ApiError
from realcast_box.api.validation import MAX_BODY_BYTES


async def error_body(response):
    assert response.content_type == "application/json"
    return await response.json()


async def test_errors_unknown_api_route_not_found(api_client):
    response = await api_client.get("/api/nope")
    body = await error_body(response)
    assert response.status == 404
    assert body == {"detail": "not found: /api/nope", "status_code": 404}


async def test_errors_unknown_non_api_path_json(api_client):
    response = await api_client.get("/hls/stream_x/index.m3u8")
    body = await error_body(response)
    assert response.status == 404
    assert body["status_code"] == 404


async def test_errors_method_not_allowed_has_allow(api_client):
    response = await api_client.delete("/api/auth/me")
    body = await error_body(response)
    assert response.status == 405
    assert body["status_code"] == 405
    assert "DELETE" in body["detail"]
    assert "GET" in response.headers["Allow"]


async def test_errors_method_not_allowed_on_item_route(api_client):
    response = await api_client.post("/api/streams/stream_x/status")
    assert response.status == 405
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{bad json", "malformed JSON in request body"),
        (b'{"name": "x",}', "malformed JSON in request body"),
        (b"", "request body is empty"),
        (b"   ", "request body is empty"),
        (b"[1, 2]", "request body must be a JSON object, got an array"),
        (b'"text"', "request body must be a JSON object, got a string"),
        (b"null", "request body must be a JSON object, got null"),
        (b"\xff\xfe{}", "malformed JSON in request body"),
        (b'{"name": NaN}', "malformed JSON in request body"),
        (b'{"name": "x", "settings": {"n": 1e400}}', "malformed JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed JSON in request body"),
    ],
    ids=[
        "truncated",
        "trailing-comma",
        "empty",
        "blank",
        "array",
        "string",
        "null",
        "not-utf8",
        "nan",
        "infinite-number",
        "deep-nesting",
    ],
)
async def test_errors_bad_body_rejected(make_user, data, expected):
    user = await make_user()
    response = await user.client.post(
        "/api/apps",
        data=data,
        headers={**user.headers, "Content-Type": "application/json"},
    )
    body = await error_body(response)
    assert response.status == 400
    assert body["status_code"] == 400
    assert body["detail"].startswith(expected)


async def test_errors_settings_nested_too_deep(make_user):
    user = await make_user()
    settings: dict = {}
    for _ in range(70):
        settings = {"level": settings}
    response = await user.client.post(
        "/api/apps", json={"name": "x", "settings": settings}, headers=user.headers
    )
    body = await error_body(response)
    assert response.status == 400
    assert "nested deeper than 64 levels" in body["detail"]


async def test_errors_body_over_limit_too_large(make_user):
    user = await make_user()
    # BytesIO, because aiohttp's client warns about large raw bytes bodies.
    data = io.BytesIO(b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}')
    response = await user.client.post("/api/apps", data=data, headers=user.headers)
    body = await error_body(response)
    assert response.status == 413
    assert body["status_code"] == 413
    assert str(MAX_BODY_BYTES) in body["detail"]


async def test_errors_chunked_body_over_limit_too_large(make_user):
    user = await make_user()

    async def chunks():
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = await user.client.post("/api/apps", data=chunks(), headers=user.headers)
    body = await error_body(response)
    assert response.status == 413
    assert body["status_code"] == 413


async def test_errors_body_at_limit_accepted_for_parsing(make_user):
    user = await make_user()
    prefix, suffix = b'{"name": "x", "description": "', b'"}'
    filler = b"d" * (MAX_BODY_BYTES - len(prefix) - len(suffix))
    data = prefix + filler + suffix
    assert len(data) == MAX_BODY_BYTES
    response = await user.client.post(
        "/api/apps", data=io.BytesIO(data), headers=user.headers
    )
    body = await error_body(response)
    assert response.status == 400
    assert body["detail"] == "description: must be at most 5000 characters"


async def test_errors_unauthorized_shape(api_client):
    response = await api_client.get("/api/apps")
    body = await error_body(response)
    assert response.status == 401
    assert set(body) == {"detail", "status_code"}
    assert body["status_code"] == 401


async def boom(request):
    raise RuntimeError("secret internal state")


async def custom_not_found(request):
    raise web.HTTPNotFound(text="HLS resource not found: index.m3u8")


async def redirect(request):
    raise web.HTTPFound("/api/auth/me")


async def test_errors_unexpected_exception_internal_error(
    api_app, aiohttp_client, caplog
):
    api_app.router.add_get("/boom", boom)
    client = await aiohttp_client(api_app)
    with caplog.at_level(logging.ERROR, logger="realcast_box.api.errors"):
        response = await client.get("/boom")
    body = await error_body(response)
    assert response.status == 500
    assert body == {"detail": "internal server error", "status_code": 500}
    assert "unhandled error in GET '/boom'" in caplog.text
    assert "RuntimeError: secret internal state" in caplog.text


async def test_errors_http_exception_text_kept(api_app, aiohttp_client):
    api_app.router.add_get("/custom", custom_not_found)
    client = await aiohttp_client(api_app)
    response = await client.get("/custom")
    body = await error_body(response)
    assert response.status == 404
    assert body["detail"] == "HLS resource not found: index.m3u8"


async def test_errors_redirect_passes_through(api_app, aiohttp_client):
    api_app.router.add_get("/redirect", redirect)
    client = await aiohttp_client(api_app)
    response = await client.get("/redirect", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/api/auth/me"


async def test_errors_later_middleware_errors_json(api_app, aiohttp_client):
    @web.middleware
    async def rate_limit(request, handler):
        if request.path == "/api/apps":
            raise ApiError(429, "rate limit exceeded", headers={"Retry-After": "60"})
        return await handler(request)

    api_app.middlewares.append(rate_limit)
    client = await aiohttp_client(api_app)
    response = await client.get("/api/apps")
    body = await error_body(response)
    assert response.status == 429
    assert body == {"detail": "rate limit exceeded", "status_code": 429}
    assert response.headers["Retry-After"] == "60"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"name": "\\ud800"}', "name"),
        (b'{"name": "ok", "settings": {"\\udfff": 1}}', "settings"),
        (b'{"name": "ok", "settings": {"list": ["\\ud83d"]}}', "settings"),
    ],
    ids=["value", "nested-key", "nested-list"],
)
async def test_errors_lone_surrogate_names_field(make_user, data, field):
    user = await make_user()
    response = await user.client.post(
        "/api/apps",
        data=data,
        headers={**user.headers, "Content-Type": "application/json"},
    )
    body = await error_body(response)
    assert response.status == 400
    assert body["detail"].startswith(f"{field}: ")
    assert "surrogate" in body["detail"]


async def test_errors_surrogate_pair_accepted(make_user):
    user = await make_user()
    response = await user.client.post(
        "/api/apps",
        data=b'{"name": "\\ud83c\\udfa5 live"}',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert response.status == 201
    assert (await response.json())["name"] == "\U0001f3a5 live"
