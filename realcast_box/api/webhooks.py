"""Routes under /api/webhooks: webhooks, their delivery log, redelivery and tests.

A webhook belongs to one app. A user reaches the webhooks of their own
apps, and other users get 404. An API key reaches the webhooks of its own
app, reading with webhooks:read and changing them with webhooks:write.

The secret is returned once, by the create call that generated it; no call
returns a secret after that. Test events and redeliveries are written to the
outbox before the call returns 202, and the dispatcher sends them.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from realcast_box.api import validation
from realcast_box.api.audit import audited, set_target, submit
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import (
    Identity,
    authorize,
    can_access_app,
    effective_app_id,
)
from realcast_box.api.validation import bad_request
from realcast_box.appkeys import CONFIG, DATABASE
from realcast_box.events import EVENT_TYPES
from realcast_box.store import apps as app_store
from realcast_box.store import webhooks as webhook_store
from realcast_box.store.audit import AuditEntry
from realcast_box.store.ids import format_timestamp
from realcast_box.webhooks.dispatcher import DisabledHook, Dispatcher
from realcast_box.webhooks.outbox import encode_body, make_test_event
from realcast_box.webhooks.signing import check_secret, generate_secret
from realcast_box.webhooks.urls import (
    MAX_URL_LENGTH,
    DenyList,
    check_resolved_host,
    check_url,
)

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

DISPATCHER = web.AppKey("webhook_dispatcher", Dispatcher)
WEBHOOK_STATUSES = ("active", "disabled")
# Security event type recorded when the dispatcher disables a webhook.
WEBHOOK_DISABLED = "webhook_disabled"


@functools.cache
def parse_deny_list(text: str) -> DenyList:
    return DenyList.parse(text)


def deny_list(app: web.Application) -> DenyList:
    """Return the deny list of the webhook_deny_list setting."""
    return parse_deny_list(app[CONFIG].webhook_deny_list)


def url_value(value: Any, field: str) -> str:
    """Check the form of a webhook URL; the deny list is checked with the config."""
    url = validation.text(value, field, max_length=MAX_URL_LENGTH)
    try:
        check_url(url, DenyList())
    except ValueError as exc:
        raise bad_request(field, str(exc)) from None
    return url


def secret_value(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise bad_request(field, "must be a string (omit it to generate one)")
    try:
        check_secret(value)
    except ValueError as exc:
        raise bad_request(field, str(exc)) from None
    return value


def status_value(value: Any, field: str) -> str:
    if value not in WEBHOOK_STATUSES:
        raise bad_request(
            field, f"must be one of {', '.join(WEBHOOK_STATUSES)}, got {value!r}"
        )
    return value


EVENTS_FIELD = validation.Field(
    "events",
    functools.partial(validation.choice_list, choices=EVENT_TYPES),
    required=True,
)
CREATE_FIELDS = (
    validation.Field(
        "app_id",
        functools.partial(validation.text, max_length=validation.MAX_ID_LENGTH),
        required=True,
    ),
    validation.Field("url", url_value, required=True),
    EVENTS_FIELD,
    validation.Field("secret", secret_value),
)
UPDATE_FIELDS = (
    validation.Field("url", url_value),
    EVENTS_FIELD,
    validation.Field("secret", secret_value),
    validation.Field("status", status_value),
)


def webhook_json(webhook: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    body = {
        "id": webhook["id"],
        "app_id": webhook["app_id"],
        "url": webhook["url"],
        "events": webhook["events"],
        "status": webhook["status"],
        "consecutive_failures": webhook["consecutive_failures"],
        "disabled_reason": webhook["disabled_reason"],
        "disabled_at": webhook["disabled_at"],
        "created_at": webhook["created_at"],
        "updated_at": webhook["updated_at"],
    }
    if secret is not None:
        body["secret"] = secret
    return body


def delivery_json(delivery: dict[str, Any]) -> dict[str, Any]:
    next_attempt_at = delivery["next_attempt_at"]
    if next_attempt_at is not None:
        next_attempt_at = format_timestamp(datetime.fromtimestamp(next_attempt_at, UTC))
    return {
        "id": delivery["id"],
        "webhook_id": delivery["webhook_id"],
        "event_id": delivery["event_id"],
        "event_type": delivery["event_type"],
        "status": delivery["status"],
        "attempt_count": delivery["attempt_count"],
        "next_attempt_at": next_attempt_at,
        "created_at": delivery["created_at"],
        "last_attempt_at": delivery["last_attempt_at"],
        "last_status_code": delivery["last_status_code"],
        "last_error": delivery["last_error"],
        "attempts": delivery["attempts"],
    }


def webhook_not_found(webhook_id: str) -> ApiError:
    return ApiError(404, f"webhook not found: {webhook_id}")


async def find_webhook(
    request: web.Request, identity: Identity, webhook_id: str
) -> dict[str, Any]:
    """Return the webhook if the caller may see it, else raise the 404."""
    webhook = await webhook_store.get_owned_webhook(
        request.app[DATABASE], webhook_id, identity.user_id
    )
    if webhook is None or not can_access_app(identity, webhook["app_id"]):
        raise webhook_not_found(webhook_id)
    set_target(request, webhook_id, webhook["app_id"])
    return webhook


async def check_receiver(request: web.Request, url: str) -> None:
    """Raise the 400 when the URL's host, or what it resolves to, is denied."""
    denied = deny_list(request.app)
    try:
        parsed = check_url(url, denied)
        await check_resolved_host(parsed.host or "", denied)
    except ValueError as exc:
        raise bad_request("url", str(exc)) from None


def wake_dispatcher(app: web.Application) -> None:
    dispatcher = app.get(DISPATCHER)
    if dispatcher is not None:
        dispatcher.wake()


@routes.post("/api/webhooks")
@audited("create_webhook", "webhook")
async def create_webhook(request: web.Request) -> web.Response:
    identity = await authorize(request, "webhooks:write")
    fields = await validation.read_fields(request, CREATE_FIELDS)
    app_id = fields["app_id"]
    database = request.app[DATABASE]
    app = await app_store.get_app(database, app_id, identity.user_id)
    if app is None or not can_access_app(identity, app_id):
        raise ApiError(404, f"app not found: {app_id}")
    await check_receiver(request, fields["url"])

    generated = None
    secret = fields.get("secret")
    if secret is None:
        secret = generated = generate_secret()
    webhook = await webhook_store.create_webhook(
        database, app_id, fields["url"], fields["events"], secret
    )
    set_target(request, webhook["id"], app_id)
    logger.info(
        "user %s created webhook %s in app %s for %s",
        identity.user_id,
        webhook["id"],
        app_id,
        ",".join(webhook["events"]),
    )
    return web.json_response(webhook_json(webhook, generated), status=201)


@routes.get("/api/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    identity = await authorize(request, "webhooks:read")
    limit, skip = validation.pagination(request)
    app_id = effective_app_id(identity, validation.query_id(request, "app_id"))
    database = request.app[DATABASE]
    if app_id is not None:
        if await app_store.get_app(database, app_id, identity.user_id) is None:
            raise ApiError(404, f"app not found: {app_id}")
    webhooks = await webhook_store.list_owned_webhooks(
        database, identity.user_id, app_id=app_id, limit=limit, skip=skip
    )
    total = await webhook_store.count_owned_webhooks(
        database, identity.user_id, app_id=app_id
    )
    return validation.page_response([webhook_json(item) for item in webhooks], total)


@routes.get("/api/webhooks/{webhook_id}")
async def get_webhook(request: web.Request) -> web.Response:
    identity = await authorize(request, "webhooks:read")
    webhook = await find_webhook(request, identity, request.match_info["webhook_id"])
    return web.json_response(webhook_json(webhook))


@routes.put("/api/webhooks/{webhook_id}")
@audited("update_webhook", "webhook")
async def update_webhook(request: web.Request) -> web.Response:
    identity = await authorize(request, "webhooks:write")
    webhook_id = request.match_info["webhook_id"]
    fields = await validation.read_fields(request, UPDATE_FIELDS, partial=True)
    current = await find_webhook(request, identity, webhook_id)
    if "url" in fields:
        await check_receiver(request, fields["url"])
    database = request.app[DATABASE]
    webhook = await webhook_store.update_owned_webhook(
        database, webhook_id, identity.user_id, fields
    )
    if webhook is None:
        raise webhook_not_found(webhook_id)
    if fields.get("status") == "disabled" and current["status"] == "active":
        failed = await webhook_store.fail_pending_deliveries(
            database, webhook_id, "webhook disabled by a user"
        )
        logger.info(
            "user %s disabled webhook %s; %d pending deliveries failed",
            identity.user_id,
            webhook_id,
            failed,
        )
    elif fields.get("status") == "active" and current["status"] == "disabled":
        logger.info("user %s enabled webhook %s", identity.user_id, webhook_id)
    wake_dispatcher(request.app)
    return web.json_response(webhook_json(webhook))


@routes.delete("/api/webhooks/{webhook_id}")
@audited("delete_webhook", "webhook")
async def delete_webhook(request: web.Request) -> web.Response:
    identity = await authorize(request, "webhooks:write")
    webhook_id = request.match_info["webhook_id"]
    await find_webhook(request, identity, webhook_id)
    if not await webhook_store.delete_owned_webhook(
        request.app[DATABASE], webhook_id, identity.user_id
    ):
        raise webhook_not_found(webhook_id)
    logger.info("user %s deleted webhook %s", identity.user_id, webhook_id)
    return web.Response(status=204)


@routes.get("/api/webhooks/{webhook_id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    identity = await authorize(request, "webhooks:read")
    limit, skip = validation.pagination(request)
    status = request.query.get("status")
    if status is not None and status not in webhook_store.DELIVERY_STATUSES:
        allowed = ", ".join(webhook_store.DELIVERY_STATUSES)
        raise bad_request("status", f"must be one of {allowed}, got {status!r}")
    webhook_id = request.match_info["webhook_id"]
    await find_webhook(request, identity, webhook_id)
    database = request.app[DATABASE]
    deliveries = await webhook_store.list_deliveries(
        database, webhook_id, status=status, limit=limit, skip=skip
    )
    total = await webhook_store.count_deliveries(database, webhook_id, status=status)
    return validation.page_response([delivery_json(item) for item in deliveries], total)


def require_active(webhook: dict[str, Any]) -> None:
    if webhook["status"] != "active":
        raise ApiError(
            409,
            f"webhook {webhook['id']} is disabled ({webhook['disabled_reason']});"
            " enable it with PUT status 'active' first",
        )


@routes.post("/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
@audited("redeliver_webhook_delivery", "webhook")
async def redeliver(request: web.Request) -> web.Response:
    identity = await authorize(request, "webhooks:write")
    webhook_id = request.match_info["webhook_id"]
    delivery_id = request.match_info["delivery_id"]
    webhook = await find_webhook(request, identity, webhook_id)
    require_active(webhook)
    delivery = await webhook_store.copy_delivery(
        request.app[DATABASE], delivery_id, webhook_id, datetime.now(UTC).timestamp()
    )
    if delivery is None:
        raise ApiError(404, f"delivery not found: {delivery_id}")
    logger.info(
        "user %s redelivers %s of webhook %s as %s",
        identity.user_id,
        delivery_id,
        webhook_id,
        delivery["id"],
    )
    wake_dispatcher(request.app)
    return web.json_response(delivery_json(delivery), status=202)


@routes.post("/api/webhooks/{webhook_id}/test")
@audited("test_webhook", "webhook")
async def send_test_event(request: web.Request) -> web.Response:
    identity = await authorize(request, "webhooks:write")
    webhook_id = request.match_info["webhook_id"]
    webhook = await find_webhook(request, identity, webhook_id)
    require_active(webhook)
    event = make_test_event(webhook)
    database = request.app[DATABASE]
    await webhook_store.enqueue_event(
        database,
        event_id=event.id,
        event_type=event.type,
        app_id=event.app_id,
        body=encode_body(event),
        due_at=datetime.now(UTC).timestamp(),
        webhook_id=webhook_id,
    )
    delivery = await webhook_store.get_delivery_of_event(database, webhook_id, event.id)
    if delivery is None:
        # The webhook was disabled or deleted between the check and the insert.
        raise ApiError(409, f"webhook {webhook_id} is disabled or was deleted")
    wake_dispatcher(request.app)
    return web.json_response(delivery_json(delivery), status=202)


async def record_webhook_disabled(
    app: web.Application, webhook_id: str, reason: str
) -> None:
    """Record the security event of a webhook that the dispatcher disabled."""
    owner = await webhook_store.get_webhook_owner(app[DATABASE], webhook_id)
    if owner is None:
        return
    submit(
        app,
        AuditEntry(
            action=WEBHOOK_DISABLED,
            status="failure",
            user_id=owner["user_id"],
            app_id=owner["app_id"],
            resource_type="webhook",
            resource_id=webhook_id,
            security_event=True,
            detail=f"webhook {webhook_id} disabled: {reason}",
        ),
    )


def disabled_hook(app: web.Application) -> DisabledHook:
    """Return the dispatcher's ``on_disabled`` hook, which records the event."""
    return functools.partial(record_webhook_disabled, app)
