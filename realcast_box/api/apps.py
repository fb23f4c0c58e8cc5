"""Routes under /api/apps. A user sees only their own apps, other users get 404."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from realcast_box.api import validation
from realcast_box.api.auth import require_user
from realcast_box.api.errors import ApiError
from realcast_box.api.streams import disconnect_publishers
from realcast_box.appkeys import DATABASE
from realcast_box.store import apps as app_store

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

APP_FIELDS = ("name", "description", "settings")


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


def parse_app_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Check the fields present in ``body`` and return them ready to store."""
    fields: dict[str, Any] = {}
    if "name" in body:
        fields["name"] = validation.required_text(
            body, "name", max_length=validation.MAX_NAME_LENGTH
        )
    if "description" in body:
        fields["description"] = validation.optional_text(
            body["description"],
            "description",
            max_length=validation.MAX_DESCRIPTION_LENGTH,
        )
    if "settings" in body:
        fields["settings"] = validation.settings_object(body["settings"])
    return fields


@routes.post("/api/apps")
async def create_app(request: web.Request) -> web.Response:
    user = await require_user(request)
    body = await validation.read_json_object(request, allowed=APP_FIELDS)
    if "name" not in body:
        raise validation.bad_request("name", "field required")
    fields = parse_app_fields(body)
    app = await app_store.create_app(
        request.app[DATABASE],
        user["id"],
        fields["name"],
        fields.get("description", ""),
        fields.get("settings", {}),
    )
    logger.info("user %s created app %s", user["id"], app["id"])
    return web.json_response(app_json(app), status=201)


@routes.get("/api/apps")
async def list_apps(request: web.Request) -> web.Response:
    user = await require_user(request)
    limit, skip = validation.pagination(request)
    apps = await app_store.list_apps(
        request.app[DATABASE], user["id"], limit=limit, skip=skip
    )
    return web.json_response([app_json(app) for app in apps])


@routes.get("/api/apps/{app_id}")
async def get_app(request: web.Request) -> web.Response:
    user = await require_user(request)
    app_id = request.match_info["app_id"]
    app = await app_store.get_app(request.app[DATABASE], app_id, user["id"])
    if app is None:
        raise app_not_found(app_id)
    return web.json_response(app_json(app))


@routes.put("/api/apps/{app_id}")
async def update_app(request: web.Request) -> web.Response:
    user = await require_user(request)
    app_id = request.match_info["app_id"]
    body = await validation.read_json_object(request, allowed=APP_FIELDS)
    fields = parse_app_fields(body)
    app = await app_store.update_app(request.app[DATABASE], app_id, user["id"], fields)
    if app is None:
        raise app_not_found(app_id)
    return web.json_response(app_json(app))


@routes.delete("/api/apps/{app_id}")
async def delete_app(request: web.Request) -> web.Response:
    user = await require_user(request)
    app_id = request.match_info["app_id"]
    stream_ids = await app_store.delete_app(request.app[DATABASE], app_id, user["id"])
    if stream_ids is None:
        raise app_not_found(app_id)
    logger.info(
        "user %s deleted app %s with %d streams", user["id"], app_id, len(stream_ids)
    )
    await disconnect_publishers(request.app, stream_ids, f"app {app_id} deleted")
    return web.Response(status=204)
