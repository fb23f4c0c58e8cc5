"""Routes under /api/api-keys: create, list, regenerate and delete API keys.

A key belongs to one app and carries scopes. Its ``api_secret`` is returned
by create and regenerate only. The box stores an HMAC of it, so a lost
secret can only be replaced. Managing keys needs a user's access token: an
API key cannot create, list or change keys, its own included.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aiohttp import web

from realcast_box.api import validation
from realcast_box.api.audit import audited, set_target
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import API_KEY_HASH_SECRET, authorize_user
from realcast_box.appkeys import DATABASE
from realcast_box.store import api_keys as key_store
from realcast_box.store import apps as app_store

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

MANAGE_KEYS = "manage API keys"
CREATE_FIELDS = (
    validation.Field(
        "app_id",
        functools.partial(validation.text, max_length=validation.MAX_ID_LENGTH),
        required=True,
    ),
    validation.Field(
        "name",
        functools.partial(validation.text, max_length=validation.MAX_NAME_LENGTH),
        required=True,
    ),
    validation.Field(
        "scopes",
        functools.partial(validation.choice_list, choices=key_store.SCOPES),
        required=True,
    ),
    validation.Field("expires_at", validation.future_timestamp),
)


def key_json(key: dict[str, Any], api_secret: str | None = None) -> dict[str, Any]:
    body = {
        "id": key["id"],
        "app_id": key["app_id"],
        "name": key["name"],
        "api_key": key["api_key"],
        "scopes": key["scopes"],
        "created_at": key["created_at"],
        "expires_at": key["expires_at"],
        "last_used_at": key["last_used_at"],
    }
    if api_secret is not None:
        body["api_secret"] = api_secret
    return body


def key_not_found(key_id: str) -> ApiError:
    return ApiError(404, f"API key not found: {key_id}")


def new_secret(request: web.Request) -> tuple[str, str]:
    """Return a new (api_secret, its stored hash)."""
    secret = key_store.new_api_secret()
    return secret, key_store.hash_api_secret(secret, request.app[API_KEY_HASH_SECRET])


@routes.post("/api/api-keys")
@audited("create_api_key", "api_key")
async def create_key(request: web.Request) -> web.Response:
    identity = await authorize_user(request, MANAGE_KEYS)
    fields = await validation.read_fields(request, CREATE_FIELDS)
    app_id = fields["app_id"]
    database = request.app[DATABASE]
    if await app_store.get_app(database, app_id, identity.user_id) is None:
        raise ApiError(404, f"app not found: {app_id}")

    secret, secret_hash = new_secret(request)
    key = await key_store.create_key(
        database,
        app_id,
        fields["name"],
        fields["scopes"],
        secret_hash,
        fields.get("expires_at"),
    )
    set_target(request, key["id"], app_id)
    logger.info(
        "user %s created API key %s for app %s with scopes %s",
        identity.user_id,
        key["id"],
        app_id,
        ",".join(key["scopes"]),
    )
    return web.json_response(key_json(key, secret), status=201)


@routes.get("/api/api-keys")
async def list_keys(request: web.Request) -> web.Response:
    identity = await authorize_user(request, MANAGE_KEYS)
    limit, skip = validation.pagination(request)
    app_id = validation.query_id(request, "app_id")
    database = request.app[DATABASE]
    if app_id is not None:
        if await app_store.get_app(database, app_id, identity.user_id) is None:
            raise ApiError(404, f"app not found: {app_id}")
    keys = await key_store.list_owned_keys(
        database, identity.user_id, app_id=app_id, limit=limit, skip=skip
    )
    total = await key_store.count_owned_keys(database, identity.user_id, app_id=app_id)
    return validation.page_response([key_json(key) for key in keys], total)


@routes.post("/api/api-keys/{key_id}/regenerate")
@audited("regenerate_api_key", "api_key", security_event=True)
async def regenerate_key(request: web.Request) -> web.Response:
    identity = await authorize_user(request, MANAGE_KEYS)
    key_id = request.match_info["key_id"]
    database = request.app[DATABASE]
    key = await key_store.get_owned_key(database, key_id, identity.user_id)
    if key is None:
        raise key_not_found(key_id)
    secret, secret_hash = new_secret(request)
    if not await key_store.set_owned_secret_hash(
        database, key_id, identity.user_id, secret_hash
    ):
        raise key_not_found(key_id)
    set_target(request, key_id, key["app_id"])
    logger.info(
        "user %s regenerated the secret of API key %s", identity.user_id, key_id
    )
    return web.json_response(key_json(key, secret))


@routes.delete("/api/api-keys/{key_id}")
@audited("delete_api_key", "api_key", security_event=True)
async def delete_key(request: web.Request) -> web.Response:
    identity = await authorize_user(request, MANAGE_KEYS)
    key_id = request.match_info["key_id"]
    database = request.app[DATABASE]
    key = await key_store.get_owned_key(database, key_id, identity.user_id)
    if key is None or not await key_store.delete_owned_key(
        database, key_id, identity.user_id
    ):
        raise key_not_found(key_id)
    set_target(request, key_id, key["app_id"])
    logger.info("user %s deleted API key %s", identity.user_id, key_id)
    return web.Response(status=204)
