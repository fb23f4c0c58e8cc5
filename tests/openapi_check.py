"""Check API responses against the OpenAPI document, for tests.

``OpenApiCheckingClient`` is an aiohttp TestClient that checks every response
it receives. The status code must be documented for the operation, and the
required headers present. The content type must be a documented one, and a
JSON body must match the documented schema. A mismatch raises
AssertionError in the test that made the request. conftest.py's api_client
fixture uses it, so every API test also checks the document.

Requests to paths outside the document (routes that a test adds) are only
checked when they fail: their JSON error body must match the Error schema.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from realcast_box.api.openapi import build_document

DOCUMENT_URI = "urn:realcast-box:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PARAMETER = re.compile(r"\{([^}/]+)\}")


def _pointer(*parts: str) -> str:
    """Return the JSON pointer of ``parts`` inside the document, as a $ref."""
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return f"{DOCUMENT_URI}#/" + "/".join(escaped)


@dataclass(frozen=True)
class Route:
    template: str
    pattern: re.Pattern[str]
    item: dict[str, Any]


class ResponseChecker:
    """The document's routes and schemas, and the check of one response."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(DOCUMENT_URI, resource)
        self.routes = [
            Route(template, _template_pattern(template), item)
            for template, item in document["paths"].items()
        ]

    def find_route(self, path: str) -> Route | None:
        for route in self.routes:
            if route.pattern.fullmatch(path):
                return route
        return None

    def problems(
        self, method: str, path: str, status: int, headers: Any, body: bytes
    ) -> list[str]:
        """Return what is wrong with a response, as messages; [] if nothing."""
        route = self.find_route(path)
        if route is None:
            return self._undocumented_path_problems(status, headers, body)
        method = method.lower()
        if method == "head" and "get" in route.item:
            method = "get"
            body = b""
        if method not in route.item:
            return self._method_not_allowed_problems(route, status, headers, body)
        responses = route.item[method]["responses"]
        key = str(status) if str(status) in responses else "default"
        if key not in responses:
            documented = ", ".join(responses)
            return [f"status {status} is not documented (documented: {documented})"]
        location, response = self._resolve(
            ("paths", route.template, method, "responses", key)
        )
        return [
            *self._header_problems(response, headers),
            *self._content_problems(location, response, headers, body),
        ]

    def _undocumented_path_problems(
        self, status: int, headers: Any, body: bytes
    ) -> list[str]:
        if status < 400 or not headers.get("Content-Type", "").startswith(
            "application/json"
        ):
            return []
        return self._body_problems(
            _pointer("components", "schemas", "Error"), json.loads(body)
        )

    def _method_not_allowed_problems(
        self, route: Route, status: int, headers: Any, body: bytes
    ) -> list[str]:
        if status != 405:
            return [f"a method that {route.template} does not list got {status}"]
        problems = [] if "Allow" in headers else ["405 without an Allow header"]
        return problems + self._body_problems(
            _pointer("components", "schemas", "Error"), json.loads(body)
        )

    def _resolve(self, parts: tuple[str, ...]) -> tuple[tuple[str, ...], dict]:
        """Return the location and value of a response object, following $ref."""
        value: Any = self.document
        for part in parts:
            value = value[part]
        while "$ref" in value:
            parts = tuple(value["$ref"].removeprefix("#/").split("/"))
            value = self.document
            for part in parts:
                value = value[part]
        return parts, value

    def _header_problems(self, response: dict, headers: Any) -> list[str]:
        problems = []
        for name, header in response.get("headers", {}).items():
            if "$ref" in header:
                header = self.document["components"]["headers"][name]
            value = headers.get(name)
            if value is None:
                if header.get("required"):
                    problems.append(f"required header {name} is missing")
                continue
            if header["schema"].get("type") == "integer":
                if not re.fullmatch(r"-?[0-9]+", value):
                    problems.append(f"header {name} is not an integer: {value!r}")
        return problems

    def _content_problems(
        self, location: tuple[str, ...], response: dict, headers: Any, body: bytes
    ) -> list[str]:
        content = response.get("content")
        if not content:
            if body:
                return [f"undocumented body: {body[:200]!r}"]
            return []
        media_type = headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in content:
            return [f"content type {media_type!r} is not one of {sorted(content)}"]
        if media_type != "application/json" or not body:
            return []
        schema = _pointer(*location, "content", media_type, "schema")
        return self._body_problems(schema, json.loads(body))

    def _body_problems(self, schema_uri: str, value: Any) -> list[str]:
        validator = Draft202012Validator(
            {"$ref": schema_uri}, registry=self.registry, format_checker=FormatChecker()
        )
        return [
            f"body {'/'.join(map(str, error.absolute_path)) or '(root)'}:"
            f" {error.message}"
            for error in validator.iter_errors(value)
        ]


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = PARAMETER.split(template)
    # split() alternates literal text and parameter names.
    regex = "".join(
        re.escape(part) if index % 2 == 0 else "[^/]+"
        for index, part in enumerate(parts)
    )
    return re.compile(regex)


@functools.cache
def response_checker() -> ResponseChecker:
    return ResponseChecker(build_document())


async def check_response(method: str, response: ClientResponse) -> None:
    """Raise AssertionError when ``response`` does not match the document."""
    body = await response.read()
    problems = response_checker().problems(
        method, response.url.raw_path, response.status, response.headers, body
    )
    assert not problems, (
        f"{method} {response.url.path} -> {response.status} does not match the"
        f" OpenAPI document: {'; '.join(problems)}. Body: {body[:500]!r}"
    )


class OpenApiCheckingClient(TestClient):
    """A TestClient that checks each response against the OpenAPI document."""

    # TestClient.request, get, post and the others all send through _request.
    async def _request(self, method: str, path: Any, **kwargs: Any) -> ClientResponse:
        response = await super()._request(method, path, **kwargs)
        await check_response(method, response)
        return response
