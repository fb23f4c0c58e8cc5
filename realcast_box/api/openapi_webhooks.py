"""The webhook part of the OpenAPI document: paths, schemas and outgoing events.

``webhook_paths`` and ``webhook_schemas`` join the paths and schemas of
openapi_paths and openapi_schemas. ``outgoing_webhooks`` fills the
document's top-level ``webhooks`` member, which describes the requests the
box sends to webhook URLs.
"""

from __future__ import annotations

from typing import Any

from realcast_box.api import validation
from realcast_box.api.openapi_paths import (
    CHANGE_ITEM,
    READ_ITEM,
    READ_LIST,
    WRITE_BODY,
    _created,
    _links,
    _list_parameters,
    _list_response,
    _operation,
    _path_parameter,
    _query,
    _response,
    scoped,
)
from realcast_box.api.openapi_schemas import (
    _id,
    _object,
    _timestamp,
    json_content,
    schema_ref,
    text_field,
)
from realcast_box.api.webhooks import WEBHOOK_STATUSES
from realcast_box.events import EVENT_TYPES
from realcast_box.store.webhooks import DELIVERY_STATUSES
from realcast_box.webhooks import signing
from realcast_box.webhooks.delivery import MAX_RESPONSE_BYTES
from realcast_box.webhooks.urls import MAX_URL_LENGTH

WEBHOOKS_TAG = {"name": "webhooks", "description": "Event delivery to your servers."}
EVENT_TYPE = {"type": "string", "enum": list(EVENT_TYPES)}
NULLABLE_TEXT = {"type": ["string", "null"]}


def webhook_schemas() -> dict[str, Any]:
    events = {
        "type": "array",
        "items": EVENT_TYPE,
        "minItems": 1,
        "maxItems": validation.MAX_LIST_ITEMS,
        "description": "Event types to deliver; duplicates are dropped. An"
        " unknown type gets 400.",
    }
    url = {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_URL_LENGTH,
        "description": "http or https URL without credentials or fragment. Hosts"
        " on the webhook_deny_list setting (link-local and cloud metadata"
        " addresses by default) get 400; loopback and LAN hosts are allowed.",
    }
    secret = {
        "type": "string",
        "minLength": signing.MIN_TEXT_SECRET_LENGTH,
        "maxLength": signing.MAX_SECRET_LENGTH,
        "description": "Signing secret: text of 16 to 256 characters, or"
        ' "whsec_" and the base64 of 24 to 64 bytes. Omit it to have the box'
        " generate one.",
    }
    webhook_fields = {
        "id": _id("webhook", "Webhook id."),
        "app_id": _id("app", "App whose events the webhook receives."),
        "url": {"type": "string"},
        "events": {"type": "array", "items": EVENT_TYPE},
        "status": {
            "type": "string",
            "enum": list(WEBHOOK_STATUSES),
            "description": "Disabled webhooks get no new deliveries.",
        },
        "consecutive_failures": {
            "type": "integer",
            "minimum": 0,
            "description": "Deliveries in a row that failed after their last attempt.",
        },
        "disabled_reason": {**NULLABLE_TEXT, "description": "Why it is disabled."},
        "disabled_at": _timestamp("When it was disabled.", nullable=True),
        "created_at": _timestamp("Time of creation."),
        "updated_at": _timestamp("Time of the last change."),
    }
    attempt = _object(
        {
            "attempt": {"type": "integer", "minimum": 1},
            "attempted_at": _timestamp("Start of the attempt."),
            "status_code": {
                "type": ["integer", "null"],
                "description": "HTTP status of the response; null without one.",
            },
            "latency_ms": {"type": "integer", "minimum": 0},
            "error": {
                **NULLABLE_TEXT,
                "description": "Why the attempt failed; null on success.",
            },
            "response_body": {
                "type": ["string", "null"],
                "maxLength": MAX_RESPONSE_BYTES,
                "description": f"The first {MAX_RESPONSE_BYTES} bytes of the"
                " response body, decoded as UTF-8.",
            },
        },
        description="One POST to the webhook URL.",
    )
    delivery = _object(
        {
            "id": _id("dlv", "Delivery id."),
            "webhook_id": _id("webhook", "Webhook id."),
            "event_id": _id("evt", "Event id, sent as the webhook-id header."),
            "event_type": EVENT_TYPE,
            "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
            "attempt_count": {"type": "integer", "minimum": 0},
            "next_attempt_at": _timestamp(
                "When the next attempt is due; null once delivered or failed.",
                nullable=True,
            ),
            "created_at": _timestamp("When the event was queued."),
            "last_attempt_at": _timestamp("Start of the last attempt.", nullable=True),
            "last_status_code": {"type": ["integer", "null"]},
            "last_error": NULLABLE_TEXT,
            "attempts": {"type": "array", "items": schema_ref("WebhookAttempt")},
        },
        description="One event sent to one webhook, with its attempts.",
    )
    return {
        "Webhook": _object(
            webhook_fields, description="A webhook, without its secret."
        ),
        "WebhookCreated": _object(
            {
                **webhook_fields,
                "secret": {
                    "type": "string",
                    "description": "The generated secret, returned only here and"
                    " only when the request had none.",
                },
            },
            required=tuple(webhook_fields),
        ),
        "WebhookCreate": _object(
            {
                "app_id": text_field(validation.MAX_ID_LENGTH, "App of the webhook."),
                "url": url,
                "events": events,
                "secret": secret,
            },
            required=("app_id", "url", "events"),
        ),
        "WebhookUpdate": _object(
            {
                "url": url,
                "events": events,
                "secret": secret,
                "status": {
                    "type": "string",
                    "enum": list(WEBHOOK_STATUSES),
                    "description": '"active" enables a disabled webhook and clears'
                    ' its failure count; "disabled" fails its pending deliveries.',
                },
            },
            required=(),
            description="Fields to change; absent ones keep their value.",
        ),
        "WebhookAttempt": attempt,
        "WebhookDelivery": delivery,
        "WebhookEvent": _object(
            {
                "id": _id("evt", "Event id; the same in every attempt."),
                "type": EVENT_TYPE,
                "app_id": _id("app", "App of the event."),
                "stream_id": {
                    "type": ["string", "null"],
                    "description": "Stream of the event; null for webhook.test.",
                },
                "timestamp": _timestamp("When the event happened."),
                "data": {
                    "type": "object",
                    "description": "Details of the event; docs/api.md lists them.",
                },
            },
            description="The JSON body of every webhook request.",
        ),
    }


def webhook_paths() -> dict[str, Any]:
    webhook = _response("The webhook.", schema_ref("Webhook"))
    delivery = _response("The queued delivery.", schema_ref("WebhookDelivery"))
    webhook_id = _path_parameter("webhook_id", "Webhook id.")
    delivery_id = _path_parameter("delivery_id", "Delivery id.")
    disabled = (401, 403, 404, 409, 429)
    status = _query(
        "status",
        {"type": "string", "enum": list(DELIVERY_STATUSES)},
        "Only the deliveries in this status.",
    )
    return {
        "/api/webhooks": {
            "post": _operation(
                "createWebhook",
                "webhooks",
                "Create a webhook",
                {
                    "201": _created(
                        "The new webhook, with its secret if the box generated it.",
                        "WebhookCreated",
                        _links(
                            "webhook_id",
                            "getWebhook",
                            "updateWebhook",
                            "deleteWebhook",
                            "listWebhookDeliveries",
                            "testWebhook",
                        ),
                    )
                },
                WRITE_BODY,
                security=scoped("webhooks:write"),
                body="WebhookCreate",
            ),
            "get": _operation(
                "listWebhooks",
                "webhooks",
                "List webhooks, newest first",
                {"200": _list_response("Webhook", "One page of webhooks.")},
                READ_LIST,
                security=scoped("webhooks:read"),
                parameters=_list_parameters(),
                description="Without app_id, the webhooks of all the caller's"
                " apps. An API key that names another app gets 404.",
            ),
        },
        "/api/webhooks/{webhook_id}": {
            "parameters": [webhook_id],
            "get": _operation(
                "getWebhook",
                "webhooks",
                "Get a webhook",
                {"200": webhook},
                READ_ITEM,
                security=scoped("webhooks:read"),
            ),
            "put": _operation(
                "updateWebhook",
                "webhooks",
                "Update or re-enable a webhook",
                {"200": webhook},
                WRITE_BODY,
                security=scoped("webhooks:write"),
                body="WebhookUpdate",
            ),
            "delete": _operation(
                "deleteWebhook",
                "webhooks",
                "Delete a webhook and its delivery log",
                {"204": _response("Deleted.")},
                CHANGE_ITEM,
                security=scoped("webhooks:write"),
            ),
        },
        "/api/webhooks/{webhook_id}/deliveries": {
            "parameters": [webhook_id],
            "get": _operation(
                "listWebhookDeliveries",
                "webhooks",
                "List a webhook's deliveries and their attempts, newest first",
                {"200": _list_response("WebhookDelivery", "One page of deliveries.")},
                READ_LIST,
                security=scoped("webhooks:read"),
                parameters=[*_list_parameters(app_filter=False), status],
            ),
        },
        "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver": {
            "parameters": [webhook_id, delivery_id],
            "post": _operation(
                "redeliverWebhookDelivery",
                "webhooks",
                "Send a delivery's event again",
                {"202": delivery},
                disabled,
                security=scoped("webhooks:write"),
                description="Queues a new delivery with the same event id and"
                " body. 409 while the webhook is disabled.",
            ),
        },
        "/api/webhooks/{webhook_id}/test": {
            "parameters": [webhook_id],
            "post": _operation(
                "testWebhook",
                "webhooks",
                "Send a webhook.test event",
                {"202": delivery},
                disabled,
                security=scoped("webhooks:write"),
                description="Goes to this webhook alone, whatever its events"
                " list. 409 while the webhook is disabled.",
            ),
        },
    }


def outgoing_webhooks() -> dict[str, Any]:
    """Return the document's ``webhooks`` member: the POST the box sends."""

    def header(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "header",
            "required": True,
            "schema": {"type": "string"},
            "description": description,
        }

    return {
        "event": {
            "post": {
                "operationId": "receiveEvent",
                "tags": ["webhooks"],
                "summary": "An event, POSTed to each webhook that lists its type",
                "parameters": [
                    header(
                        "X-Webhook-Signature",
                        "Hex HMAC-SHA256 of the raw body, keyed with the secret.",
                    ),
                    header("webhook-id", "The event id, the same in every attempt."),
                    header("webhook-timestamp", "Unix time of this attempt."),
                    header(
                        "webhook-signature",
                        '"v1," and the base64 HMAC-SHA256 of'
                        ' "{webhook-id}.{webhook-timestamp}.{body}" (Standard'
                        " Webhooks).",
                    ),
                    header("X-Webhook-Event", "The event type."),
                    header("X-Webhook-Delivery", "The delivery id."),
                ],
                "requestBody": {
                    "required": True,
                    "content": json_content(schema_ref("WebhookEvent")),
                },
                "responses": {
                    "200": {
                        "description": "Any 2xx status within the timeout counts"
                        " as delivered; anything else is retried, and 410"
                        " disables the webhook."
                    }
                },
            }
        }
    }
