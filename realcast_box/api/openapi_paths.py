"""The paths of the OpenAPI document: every operation under /api, and /healthz.

Each operation lists every status code it can return. 500 is added to all
of them, and the error responses and headers are shared components from
openapi_schemas.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from realcast_box.api import validation
from realcast_box.api.audit import ACTION_PATTERN, MAX_ACTION_LENGTH, MAX_DAYS
from realcast_box.api.openapi_schemas import (
    ERROR_RESPONSES,
    RATE_LIMIT_HEADERS,
    header_refs,
    json_content,
    ref,
    schema_ref,
)

USER_ONLY = [{"bearerAuth": []}]
NO_AUTH: list[dict[str, list[str]]] = []


def scoped(scope: str) -> list[dict[str, list[str]]]:
    """Return the security requirement of a call open to users and API keys."""
    return [{"bearerAuth": []}, {"basicAuth": [scope]}]


def _response(
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    extra_headers: Iterable[str] = (),
    rate_limited: bool = True,
) -> dict[str, Any]:
    names = [*extra_headers, *(RATE_LIMIT_HEADERS if rate_limited else ())]
    response: dict[str, Any] = {"description": description}
    if names:
        response["headers"] = header_refs(*names)
    if schema is not None:
        response["content"] = json_content(schema)
    return response


def _links(parameter: str, *operation_ids: str) -> dict[str, Any]:
    """Return links that pass a new resource's id to the operations that use it."""
    return {
        operation_id[0].upper() + operation_id[1:]: {
            "operationId": operation_id,
            "parameters": {parameter: "$response.body#/id"},
        }
        for operation_id in operation_ids
    }


def _body_links(field: str, *operation_ids: str) -> dict[str, Any]:
    """Return links that put a new resource's id into the ``field`` of a body."""
    return {
        operation_id[0].upper() + operation_id[1:]: {
            "operationId": operation_id,
            "requestBody": {field: "$response.body#/id"},
        }
        for operation_id in operation_ids
    }


def _created(description: str, schema: str, links: dict[str, Any]) -> dict:
    return {**_response(description, schema_ref(schema)), "links": links}


def _list_response(item_schema: str, description: str) -> dict[str, Any]:
    schema = {"type": "array", "items": schema_ref(item_schema)}
    return _response(description, schema, extra_headers=("X-Total-Count",))


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": description,
    }


def _list_parameters(*, app_filter: bool = True, days: bool = False) -> list[dict]:
    parameters = [
        _query(
            "limit",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": validation.MAX_LIMIT,
                "default": validation.DEFAULT_LIMIT,
            },
            "Maximum number of items to return.",
        ),
        _query(
            "skip",
            {
                "type": "integer",
                "minimum": 0,
                "maximum": validation.MAX_SKIP,
                "default": 0,
            },
            "Items to skip, newest first.",
        ),
    ]
    if app_filter:
        app_id = {
            "type": "string",
            "minLength": 1,
            "maxLength": validation.MAX_ID_LENGTH,
        }
        parameters.append(_query("app_id", app_id, "Only the items of this app."))
    if days:
        parameters.append(
            _query(
                "days",
                {"type": "integer", "minimum": 1, "maximum": MAX_DAYS},
                "Only the entries of the last `days` days.",
            )
        )
    return parameters


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: dict[str, Any],
    errors: Iterable[int],
    *,
    security: list[dict[str, list[str]]] | None = None,
    parameters: Iterable[dict[str, Any]] = (),
    body: str | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Return one operation whose error responses are ``errors`` and 500."""
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
    }
    if description:
        operation["description"] = description
    if security is not None:
        operation["security"] = security
    parameters = list(parameters)
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": json_content(schema_ref(body)),
        }
    all_responses = dict(responses)
    for status in sorted(set(errors) | {500}):
        all_responses[str(status)] = ref("responses", ERROR_RESPONSES[status][0])
    operation["responses"] = all_responses
    return operation


# Error statuses of each kind of call, besides 500.
READ_ITEM = (401, 403, 404, 429)
READ_LIST = (400, 401, 403, 404, 429)
WRITE_BODY = (400, 401, 403, 404, 413, 429)
CHANGE_ITEM = (401, 403, 404, 429)


def _auth_paths() -> dict[str, Any]:
    user = _response("The user.", schema_ref("User"))
    return {
        "/api/auth/register": {
            "post": _operation(
                "registerUser",
                "auth",
                "Register a user",
                {"201": _response("The new user.", schema_ref("User"))},
                (400, 401, 403, 409, 413, 429),
                security=NO_AUTH,
                body="RegisterRequest",
                description="Needs no credentials. Basic (API key) credentials"
                " get 401 when invalid and 403 otherwise.",
            )
        },
        "/api/auth/login": {
            "post": _operation(
                "login",
                "auth",
                "Log in for an access token",
                {"200": _response("An access token.", schema_ref("Login"))},
                (400, 401, 413, 429),
                security=NO_AUTH,
                body="LoginRequest",
                description="A wrong email and a wrong password get the same"
                " 401. Attempts are also limited per email address.",
            )
        },
        "/api/auth/me": {
            "get": _operation(
                "getCurrentUser",
                "auth",
                "Get the current user",
                {"200": user},
                (401, 403, 429),
                security=USER_ONLY,
            )
        },
    }


def _app_paths() -> dict[str, Any]:
    app = _response("The app.", schema_ref("App"))
    app_id = _path_parameter("app_id", "App id.")
    return {
        "/api/apps": {
            "post": _operation(
                "createApp",
                "apps",
                "Create an app",
                {
                    "201": _created(
                        "The new app.",
                        "App",
                        {
                            **_links("app_id", "getApp", "updateApp", "deleteApp"),
                            **_links("query.app_id", "listStreams", "listApiKeys"),
                            **_body_links("app_id", "createStream", "createApiKey"),
                        },
                    )
                },
                (400, 401, 403, 413, 429),
                security=USER_ONLY,
                body="AppCreate",
            ),
            "get": _operation(
                "listApps",
                "apps",
                "List apps, newest first",
                {"200": _list_response("App", "One page of apps.")},
                (400, 401, 403, 429),
                security=scoped("apps:read"),
                parameters=_list_parameters(app_filter=False),
                description="An API key sees its own app alone.",
            ),
        },
        "/api/apps/{app_id}": {
            "parameters": [app_id],
            "get": _operation(
                "getApp",
                "apps",
                "Get an app",
                {"200": app},
                READ_ITEM,
                security=scoped("apps:read"),
            ),
            "put": _operation(
                "updateApp",
                "apps",
                "Update an app",
                {"200": app},
                WRITE_BODY,
                security=USER_ONLY,
                body="AppUpdate",
            ),
            "delete": _operation(
                "deleteApp",
                "apps",
                "Delete an app with its streams and API keys",
                {"204": _response("Deleted; live publishers are disconnected.")},
                CHANGE_ITEM,
                security=USER_ONLY,
            ),
        },
    }


def _stream_paths() -> dict[str, Any]:
    stream = _response("The stream.", schema_ref("Stream"))
    stream_id = _path_parameter("stream_id", "Stream id.")
    return {
        "/api/streams": {
            "post": _operation(
                "createStream",
                "streams",
                "Create a stream",
                {
                    "201": _created(
                        "The new stream.",
                        "Stream",
                        _links(
                            "stream_id",
                            "getStream",
                            "updateStream",
                            "getStreamStatus",
                            "createPlaybackToken",
                            "revokePlaybackTokens",
                            "resetStreamKey",
                            "deleteStream",
                        ),
                    )
                },
                WRITE_BODY,
                security=scoped("streams:write"),
                body="StreamCreate",
            ),
            "get": _operation(
                "listStreams",
                "streams",
                "List streams, newest first",
                {"200": _list_response("Stream", "One page of streams.")},
                READ_LIST,
                security=scoped("streams:read"),
                parameters=_list_parameters(),
                description="Without app_id, the streams of all the caller's"
                " apps. An API key that names another app gets 404.",
            ),
        },
        "/api/streams/{stream_id}": {
            "parameters": [stream_id],
            "get": _operation(
                "getStream",
                "streams",
                "Get a stream",
                {"200": stream},
                READ_ITEM,
                security=scoped("streams:read"),
            ),
            "put": _operation(
                "updateStream",
                "streams",
                "Update a stream",
                {"200": stream},
                WRITE_BODY,
                security=scoped("streams:write"),
                body="StreamUpdate",
            ),
            "delete": _operation(
                "deleteStream",
                "streams",
                "Delete a stream",
                {"204": _response("Deleted; a live publisher is disconnected.")},
                CHANGE_ITEM,
                security=scoped("streams:write"),
            ),
        },
        "/api/streams/{stream_id}/status": {
            "parameters": [stream_id],
            "get": _operation(
                "getStreamStatus",
                "streams",
                "Get a stream's live status",
                {"200": _response("The status.", schema_ref("StreamStatus"))},
                READ_ITEM,
                security=scoped("streams:read"),
            ),
        },
        "/api/streams/{stream_id}/playback-token": {
            "parameters": [stream_id],
            "post": _operation(
                "createPlaybackToken",
                "streams",
                "Issue a playback token for one viewer",
                {"200": _response("The token.", schema_ref("PlaybackToken"))},
                WRITE_BODY,
                security=scoped("streams:read"),
                body="PlaybackTokenRequest",
                description="Players of a stream whose playback_policy is signed"
                " need one to start.",
            ),
        },
        "/api/streams/{stream_id}/playback-token/revoke": {
            "parameters": [stream_id],
            "post": _operation(
                "revokePlaybackTokens",
                "streams",
                "Revoke every playback token of a stream",
                {
                    "200": _response(
                        "The time of the revocation.",
                        schema_ref("PlaybackRevocation"),
                    )
                },
                CHANGE_ITEM,
                security=scoped("streams:write"),
            ),
        },
        "/api/streams/{stream_id}/reset-key": {
            "parameters": [stream_id],
            "post": _operation(
                "resetStreamKey",
                "streams",
                "Issue a new stream key",
                {
                    "200": _response(
                        "The stream with its new key.", schema_ref("Stream")
                    )
                },
                CHANGE_ITEM,
                security=scoped("streams:write"),
                description="The old key stops working at once, and a publisher"
                " that is live with it is disconnected.",
            ),
        },
    }


def _key_paths() -> dict[str, Any]:
    key_id = _path_parameter("key_id", "API key id.")
    return {
        "/api/api-keys": {
            "post": _operation(
                "createApiKey",
                "api-keys",
                "Create an API key",
                {
                    "201": _created(
                        "The new key.",
                        "ApiKeyWithSecret",
                        _links("key_id", "regenerateApiKey", "deleteApiKey"),
                    )
                },
                WRITE_BODY,
                security=USER_ONLY,
                body="ApiKeyCreate",
            ),
            "get": _operation(
                "listApiKeys",
                "api-keys",
                "List API keys, newest first",
                {"200": _list_response("ApiKey", "One page of keys.")},
                READ_LIST,
                security=USER_ONLY,
                parameters=_list_parameters(),
            ),
        },
        "/api/api-keys/{key_id}/regenerate": {
            "parameters": [key_id],
            "post": _operation(
                "regenerateApiKey",
                "api-keys",
                "Replace an API key's secret",
                {
                    "200": _response(
                        "The key with its new secret.",
                        schema_ref("ApiKeyWithSecret"),
                    )
                },
                CHANGE_ITEM,
                security=USER_ONLY,
                description="The old secret gets 401 from the next request on.",
            ),
        },
        "/api/api-keys/{key_id}": {
            "parameters": [key_id],
            "delete": _operation(
                "deleteApiKey",
                "api-keys",
                "Delete an API key",
                {"204": _response("Deleted; the key gets 401 from now on.")},
                CHANGE_ITEM,
                security=USER_ONLY,
            ),
        },
    }


def _audit_paths() -> dict[str, Any]:
    action_parameter = _query(
        "action",
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ACTION_LENGTH,
            "pattern": f"^{ACTION_PATTERN.pattern}$",
        },
        "Only the entries with this action, such as `create_app`; with a"
        " trailing `*`, those whose action starts with the text before it,"
        " such as `login*`.",
    )

    def listing(operation_id: str, summary: str, description: str) -> dict:
        return _operation(
            operation_id,
            "audit-logs",
            summary,
            {"200": _list_response("AuditLogEntry", "One page of entries.")},
            READ_LIST,
            security=scoped("audit:read"),
            parameters=[*_list_parameters(days=True), action_parameter],
            description=description,
        )

    return {
        "/api/audit-logs": {
            "get": listing(
                "listAuditLogs",
                "List audit log entries, newest first",
                "A user sees the entries about themselves, their apps and"
                " their keys; an API key sees those of its app.",
            )
        },
        "/api/audit-logs/security-events": {
            "get": listing(
                "listSecurityEvents",
                "List security events, newest first",
                "The entries with security_event true.",
            )
        },
    }


def _profile_paths() -> dict[str, Any]:
    profile = _response("The profile.", schema_ref("TranscodingProfile"))
    profile_id = _path_parameter("profile_id", "Transcoding profile id.")
    return {
        "/api/transcoding-profiles": {
            "post": _operation(
                "createTranscodingProfile",
                "transcoding-profiles",
                "Create a transcoding profile",
                {
                    "201": _created(
                        "The new profile.",
                        "TranscodingProfile",
                        _links(
                            "profile_id",
                            "getTranscodingProfile",
                            "updateTranscodingProfile",
                            "deleteTranscodingProfile",
                        ),
                    )
                },
                WRITE_BODY,
                security=scoped("profiles:write"),
                body="TranscodingProfileCreate",
            ),
            "get": _operation(
                "listTranscodingProfiles",
                "transcoding-profiles",
                "List transcoding profiles, newest first",
                {"200": _list_response("TranscodingProfile", "One page of profiles.")},
                READ_LIST,
                security=scoped("profiles:read"),
                parameters=_list_parameters(),
                description="Without app_id, the profiles of all the caller's"
                " apps. An API key that names another app gets 404.",
            ),
        },
        "/api/transcoding-profiles/{profile_id}": {
            "parameters": [profile_id],
            "get": _operation(
                "getTranscodingProfile",
                "transcoding-profiles",
                "Get a transcoding profile",
                {"200": profile},
                READ_ITEM,
                security=scoped("profiles:read"),
            ),
            "put": _operation(
                "updateTranscodingProfile",
                "transcoding-profiles",
                "Update a transcoding profile",
                {"200": profile},
                WRITE_BODY,
                security=scoped("profiles:write"),
                body="TranscodingProfileUpdate",
                description="A qualities array replaces the whole ladder.",
            ),
            "delete": _operation(
                "deleteTranscodingProfile",
                "transcoding-profiles",
                "Delete a transcoding profile",
                {"204": _response("Deleted.")},
                (*CHANGE_ITEM, 409),
                security=scoped("profiles:write"),
                description="409 while a live or reconnecting stream has the"
                " profile in settings.transcoding_profile_id. Streams that are"
                " not live keep the id, which then selects no profile.",
            ),
        },
    }


def _system_paths() -> dict[str, Any]:
    statuses = {"type": "array", "items": schema_ref("EncoderStatus")}
    return {
        "/api/system/encoders": {
            "get": _operation(
                "listEncoders",
                "system",
                "List the H.264 encoders and whether they work here",
                {"200": _response("One entry per encoder probed.", statuses)},
                (401, 403, 429),
                security=scoped("profiles:read"),
                description="The box probes each encoder at start by encoding"
                " one frame, and returns that cached result.",
            )
        },
    }


def _meta_paths() -> dict[str, Any]:
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/api/openapi.json": {
            "get": _operation(
                "getOpenApiDocument",
                "meta",
                "Get this OpenAPI document",
                {"200": _response("The document.", schema_ref("OpenApiDocument"))},
                (429,),
                security=NO_AUTH,
            )
        },
        "/api/docs": {
            "get": _operation(
                "getApiDocs",
                "meta",
                "Read this document as an HTML page",
                {"200": {**_response("The page."), "content": html}},
                (429,),
                security=NO_AUTH,
            )
        },
        "/healthz": {
            "get": _operation(
                "getHealth",
                "meta",
                "Check that the box is up",
                {
                    "200": _response(
                        "The box is up.", schema_ref("Health"), rate_limited=False
                    )
                },
                (),
                security=NO_AUTH,
            )
        },
    }


def paths() -> dict[str, Any]:
    return {
        **_auth_paths(),
        **_app_paths(),
        **_stream_paths(),
        **_profile_paths(),
        **_system_paths(),
        **_key_paths(),
        **_audit_paths(),
        **_meta_paths(),
    }
