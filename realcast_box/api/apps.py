"""Routes under /api/apps. A user sees only their own apps, other users get 404.

An API key with apps:read sees its own app alone; creating, changing and
deleting apps needs a user's access token.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aiohttp import web

from realcast_box.api import validation
from realcast_box.api.audit import audited, set_target
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import authorize, authorize_user, can_access_app
from realcast_box.api.streams import refresh_chat_rooms, remove_streams_output
from realcast_box.appkeys import DATABASE
from realcast_box.store import apps as app_store

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

APP_FIELDS = (
    validation.Field(
        "name",
        functools.partial(validation.text, max_length=validation.MAX_NAME_LENGTH),
        required=True,
    ),
    validation.Field(
        "description",
        functools.partial(
            validation.optional_text, max_length=validation.MAX_DESCRIPTION_LENGTH
        ),
    ),
    validation.Field("settings", validation.settings_object),
)


def app_json(app: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": app["id"],
        "name": app["name"],
        "description": app["description"],
        "user_id": app["user_id"],
        "settings": app["settings"],
        "created_at": app["created_at"],
    }


def app_not_found(app_id: str) -> ApiError:
    return ApiError(404, f"app not found: {app_id}")


@routes.post("/api/apps")
@audited("create_app", "app")
async def create_app(request: web.Request) -> web.Response:
    identity = await authorize_user(request, "create apps")
    fields = await validation.read_fields(request, APP_FIELDS)
    app = await app_store.create_app(
        request.app[DATABASE],
        identity.user_id,
        fields["name"],
        fields.get("description", ""),
        fields.get("settings", {}),
    )
    set_app_target(request, app["id"])
    logger.info("user %s created app %s", identity.user_id, app["id"])
    return web.json_response(app_json(app), status=201)


@routes.get("/api/apps")
async def list_apps(request: web.Request) -> web.Response:
    identity = await authorize(request, "apps:read")
    limit, skip = validation.pagination(request)
    database = request.app[DATABASE]
    if identity.app_id is not None:
        # An API key lists its own app alone.
        own = await app_store.get_app(database, identity.app_id, identity.user_id)
        apps = [] if own is None else [own]
        return validation.page_response(
            [app_json(app) for app in apps[skip : skip + limit]], len(apps)
        )
    apps = await app_store.list_apps(database, identity.user_id, limit=limit, skip=skip)
    total = await app_store.count_apps(database, identity.user_id)
    return validation.page_response([app_json(app) for app in apps], total)


@routes.get("/api/apps/{app_id}")
async def get_app(request: web.Request) -> web.Response:
    identity = await authorize(request, "apps:read")
    app_id = request.match_info["app_id"]
    app = None
    if can_access_app(identity, app_id):
        app = await app_store.get_app(request.app[DATABASE], app_id, identity.user_id)
    if app is None:
        raise app_not_found(app_id)
    return web.json_response(app_json(app))


@routes.put("/api/apps/{app_id}")
@audited("update_app", "app")
async def update_app(request: web.Request) -> web.Response:
    identity = await authorize_user(request, "update apps")
    app_id = request.match_info["app_id"]
    fields = await validation.read_fields(request, APP_FIELDS, partial=True)
    app = await app_store.update_app(
        request.app[DATABASE], app_id, identity.user_id, fields
    )
    if app is None:
        raise app_not_found(app_id)
    set_app_target(request, app_id)
    await refresh_chat_rooms(request.app)
    return web.json_response(app_json(app))


@routes.delete("/api/apps/{app_id}")
@audited("delete_app", "app")
async def delete_app(request: web.Request) -> web.Response:
    identity = await authorize_user(request, "delete apps")
    app_id = request.match_info["app_id"]
    stream_ids = await app_store.delete_app(
        request.app[DATABASE], app_id, identity.user_id
    )
    if stream_ids is None:
        raise app_not_found(app_id)
    set_app_target(request, app_id)
    logger.info(
        "user %s deleted app %s with %d streams",
        identity.user_id,
        app_id,
        len(stream_ids),
    )
    await remove_streams_output(request.app, stream_ids, f"app {app_id} deleted")
    return web.Response(status=204)


def set_app_target(request: web.Request, app_id: str) -> None:
    """Name an app the caller owns as the resource and app of the audit entry."""
    set_target(request, app_id, app_id)
