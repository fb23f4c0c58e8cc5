"""Webhook secrets and signatures, checked the way receivers check them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from realcast_box.webhooks.signing import (
    body_signature,
    check_secret,
    generate_secret,
    signature_headers,
    standard_signature,
    standard_webhooks_key,
    standard_webhooks_secret,
)
from tests.webhook_receiver import verify_webhook

BODY = json.dumps({"id": "evt_1", "type": "webhook.test", "data": {}}).encode()
TEXT_SECRET = "your_webhook_secret_key"


def now() -> int:
    return int(time.time())


def test_signing_generated_secret_form():
    secret = generate_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)

    assert secret.startswith("whsec_")
    assert len(key) == 32
    assert standard_webhooks_key(secret) == key
    assert generate_secret() != secret
    check_secret(secret)


@pytest.mark.parametrize("secret", [TEXT_SECRET, "generated"])
def test_signing_spec_snippet_verifies(secret):
    secret = generate_secret() if secret == "generated" else secret
    headers = signature_headers(secret, "evt_1", now(), BODY)

    assert verify_webhook(BODY.decode(), headers["X-Webhook-Signature"], secret)
    assert not verify_webhook(
        BODY.decode() + " ", headers["X-Webhook-Signature"], secret
    )


def test_signing_library_verifies_generated_secret():
    secret = generate_secret()
    headers = signature_headers(secret, "evt_1", now(), BODY)

    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_signing_library_verifies_text_secret():
    headers = signature_headers(TEXT_SECRET, "evt_1", now(), BODY)
    converted = "whsec_" + base64.b64encode(TEXT_SECRET.encode()).decode()

    assert standard_webhooks_secret(TEXT_SECRET) == converted
    assert Webhook(converted).verify(BODY, headers) == json.loads(BODY)


def test_signing_library_rejects_old_timestamp():
    secret = generate_secret()
    headers = signature_headers(secret, "evt_1", now() - 3600, BODY)

    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)


def test_signing_standard_signature_by_hand():
    key = b"k" * 32
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = hmac.new(key, b"evt_1.1700000000." + BODY, hashlib.sha256).digest()

    signature = standard_signature(secret, "evt_1", 1700000000, BODY)

    assert signature == "v1," + base64.b64encode(expected).decode()


def test_signing_body_signature_by_hand():
    expected = hmac.new(TEXT_SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert body_signature(TEXT_SECRET, BODY) == expected


def test_signing_headers_carry_attempt_time():
    headers = signature_headers(TEXT_SECRET, "evt_1", 1700000000, BODY)
    later = signature_headers(TEXT_SECRET, "evt_1", 1700000060, BODY)

    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["X-Webhook-Signature"] == later["X-Webhook-Signature"]
    assert headers["webhook-signature"] != later["webhook-signature"]


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("short", "at least 16 characters"),
        ("x" * 257, "at most 256 characters"),
        ("line\nbreak secret text", "control characters"),
        ("whsec_not base64!", "standard base64"),
        ("whsec_" + base64.b64encode(b"k" * 8).decode(), "24 to 64 bytes, got 8"),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "24 to 64 bytes, got 65"),
    ],
)
def test_signing_invalid_secret(secret, message):
    with pytest.raises(ValueError, match=message):
        check_secret(secret)


def test_signing_valid_secrets():
    check_secret(TEXT_SECRET)
    check_secret("x" * 256)
    check_secret("whsec_" + base64.b64encode(b"k" * 24).decode())
