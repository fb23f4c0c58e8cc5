"""Webhook secrets and the two signatures on every delivery attempt.

``X-Webhook-Signature`` is the hex HMAC-SHA256 of the raw body, keyed with
the UTF-8 bytes of the secret string, as the API spec's verification
snippet computes it.

The Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``) follow Standard Webhooks 1.0.0: the signature is
"v1," and the base64 HMAC-SHA256 of "{id}.{timestamp}.{body}". That
specification serializes a symmetric key as "whsec_" plus its base64, and
its receiver libraries base64-decode what follows the prefix. So the key of
this scheme depends on the secret's form:

- "whsec_<base64>", the form the box generates: the decoded bytes. The same
  string works as it is with the spec snippet and the receiver libraries.
- any other text: its UTF-8 bytes. A receiver library then needs
  ``"whsec_" + base64(secret)``, which ``standard_webhooks_secret`` returns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
GENERATED_KEY_BYTES = 32
# Standard Webhooks 1.0.0 specifies symmetric keys of 24 to 64 bytes.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
MIN_TEXT_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 256


def generate_secret() -> str:
    """Return a new secret: "whsec_" and the base64 of 32 random bytes."""
    key = secrets.token_bytes(GENERATED_KEY_BYTES)
    return SECRET_PREFIX + base64.b64encode(key).decode()


def check_secret(secret: str) -> None:
    """Raise ValueError, with the reason, for a secret the box cannot use.

    Text secrets need 16 to 256 printable characters. A secret with the
    "whsec_" prefix must carry the standard base64 of 24 to 64 bytes,
    because receiver libraries decode it.
    """
    if len(secret) > MAX_SECRET_LENGTH:
        raise ValueError(f"must be at most {MAX_SECRET_LENGTH} characters")
    if any(not character.isprintable() for character in secret):
        raise ValueError("must not contain control characters or line breaks")
    if secret.startswith(SECRET_PREFIX):
        key = _decode_key(secret)
        if key is None:
            raise ValueError(
                f"a secret starting with {SECRET_PREFIX!r} must continue with"
                " standard base64 (A-Z, a-z, 0-9, +, / and = padding)"
            )
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise ValueError(
                f"the base64 after {SECRET_PREFIX!r} must decode to"
                f" {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, got {len(key)}"
            )
        return
    if len(secret) < MIN_TEXT_SECRET_LENGTH:
        raise ValueError(
            f"must be at least {MIN_TEXT_SECRET_LENGTH} characters (omit it to"
            " have the box generate one)"
        )


def _decode_key(secret: str) -> bytes | None:
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None


def standard_webhooks_key(secret: str) -> bytes:
    """Return the HMAC key of the Standard Webhooks signature for ``secret``."""
    if secret.startswith(SECRET_PREFIX):
        key = _decode_key(secret)
        if key:
            return key
    return secret.encode("utf-8")


def standard_webhooks_secret(secret: str) -> str:
    """Return ``secret`` in the "whsec_<base64>" form that receiver libraries take."""
    if secret.startswith(SECRET_PREFIX) and _decode_key(secret):
        return secret
    return SECRET_PREFIX + base64.b64encode(secret.encode("utf-8")).decode()


def body_signature(secret: str, body: bytes) -> str:
    """Return the X-Webhook-Signature value: hex HMAC-SHA256 of ``body``."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def standard_signature(
    secret: str, message_id: str, timestamp: int, body: bytes
) -> str:
    """Return the webhook-signature value "v1,<base64 HMAC-SHA256>"."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_webhooks_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secret: str, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Return the signature headers of one attempt sent at Unix time ``timestamp``."""
    return {
        "X-Webhook-Signature": body_signature(secret, body),
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secret, message_id, timestamp, body),
    }
