"""Request identity: a user (Bearer access token) or an API key (HTTP Basic).

``authenticate`` reads the Authorization header once per request and caches
the Identity, or the 401 error, on the request, so middlewares and handlers
may all call it. Handlers then call ``require_scope`` or ``require_user_token``
and scope their queries with ``effective_app_id`` and ``can_access_app``.

Failures that are security events (invalid or expired credentials, scope and
permission denials) raise AccessDenied, which the audit middleware records.
A missing header raises a plain ApiError: it is no event. No secret, token or
credential ever goes into an error message, a log line or an audit entry.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta

import jwt
from aiohttp import web

from realcast_box.api.errors import ApiError
from realcast_box.api.security import (
    ACCESS_TOKEN_AUDIENCE,
    JWT_ALGORITHM,
    InvalidToken,
    decode_access_token,
)
from realcast_box.appkeys import DATABASE, JWT_SECRET
from realcast_box.store import api_keys as key_store
from realcast_box.store import users as user_store
from realcast_box.store.ids import parse_timestamp, utc_now

logger = logging.getLogger(__name__)

USER = "user"
API_KEY = "api_key"

# Secret for the HMAC of API key secrets, read from the data directory.
API_KEY_HASH_SECRET = web.AppKey("api_key_hash_secret", bytes)
# The request's Identity, or the ApiError that authenticating it raised.
IDENTITY = web.RequestKey("identity", object)

BEARER_CHALLENGE = "Bearer"
INVALID_BEARER_CHALLENGE = 'Bearer error="invalid_token"'
BASIC_CHALLENGE = 'Basic realm="RealCast Box API", charset="UTF-8"'
MAX_CREDENTIALS_LENGTH = 4096
# last_used_at is written at most this often per key, so that a busy key
# does not cost a database write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Hash of a random secret, checked for an unknown api_key so that an unknown
# key and a wrong secret take equally long.
_DUMMY_SECRET = key_store.new_api_secret()

# Security event types raised here (the audit log's "action").
INVALID_TOKEN = "invalid_token"
EXPIRED_TOKEN = "expired_token"
INVALID_API_KEY = "invalid_api_key"
EXPIRED_API_KEY = "expired_api_key"
SCOPE_DENIED = "scope_denied"
PERMISSION_DENIED = "permission_denied"


@dataclass(frozen=True)
class Identity:
    """The caller of a request.

    For an API key, ``user_id`` is the id of the user who owns the key's app,
    ``app_id`` is that app, and ``scopes`` limits what the key may do. A
    user has every permission on their own apps and no ``app_id``.
    """

    kind: str
    user_id: str
    app_id: str | None = None
    key_id: str | None = None
    scopes: frozenset[str] = frozenset()

    @property
    def is_api_key(self) -> bool:
        return self.kind == API_KEY


class AccessDenied(ApiError):
    """A 401 or 403 that is also a security event of type ``event_type``.

    ``user_id``, ``app_id`` and ``key_id`` name whose event it is, where
    known (the owner of a presented key, the user of an expired token).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        event_type: str,
        user_id: str | None = None,
        app_id: str | None = None,
        key_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, detail, headers=headers)
        self.event_type = event_type
        self.user_id = user_id
        self.app_id = app_id
        self.key_id = key_id


async def authenticate(request: web.Request) -> Identity:
    """Return the caller of ``request``, or raise the 401 ApiError.

    The outcome is cached on the request, so later calls cost nothing and a
    failure is raised again without another lookup.
    """
    cached = request.get(IDENTITY)
    if isinstance(cached, Identity):
        return cached
    if isinstance(cached, ApiError):
        raise cached.with_traceback(None)
    try:
        identity = await _authenticate(request)
    except ApiError as exc:
        request[IDENTITY] = exc
        raise
    request[IDENTITY] = identity
    return identity


def cached_identity(request: web.Request) -> Identity | None:
    """Return the Identity that ``authenticate`` found, if it ran and succeeded."""
    cached = request.get(IDENTITY)
    return cached if isinstance(cached, Identity) else None


async def _authenticate(request: web.Request) -> Identity:
    header = request.headers.get("Authorization")
    if not header:
        raise ApiError(
            401,
            "missing Authorization header: send 'Bearer <access token>' or an"
            " API key as Basic credentials",
            headers={"WWW-Authenticate": BEARER_CHALLENGE},
        )
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "basic":
        return await _authenticate_api_key(request, credentials)
    if scheme.lower() != "bearer" or not credentials:
        raise AccessDenied(
            401,
            "invalid Authorization header: send 'Bearer <access token>' or an"
            " API key as Basic credentials",
            event_type=INVALID_TOKEN,
            headers={"WWW-Authenticate": BEARER_CHALLENGE},
        )
    return await _authenticate_token(request, credentials)


async def _authenticate_token(request: web.Request, token: str) -> Identity:
    secret = request.app[JWT_SECRET]
    try:
        user_id = decode_access_token(token, secret)
    except InvalidToken as exc:
        expired_user = _expired_token_user(token, secret)
        raise AccessDenied(
            401,
            f"invalid access token: {exc}",
            event_type=INVALID_TOKEN if expired_user is None else EXPIRED_TOKEN,
            user_id=expired_user,
            headers={"WWW-Authenticate": INVALID_BEARER_CHALLENGE},
        ) from None
    if await user_store.get_user(request.app[DATABASE], user_id) is None:
        raise AccessDenied(
            401,
            f"invalid access token: user {user_id} no longer exists",
            event_type=INVALID_TOKEN,
            headers={"WWW-Authenticate": INVALID_BEARER_CHALLENGE},
        )
    return Identity(kind=USER, user_id=user_id)


def _expired_token_user(token: str, secret: bytes) -> str | None:
    """Return the user of a token that is valid except for its expiry, else None.

    The signature is still checked, so the user id can be trusted and the
    event shown to that user.
    """
    if not token.isascii():
        return None
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            audience=ACCESS_TOKEN_AUDIENCE,
            options={"require": ["sub", "exp"], "verify_exp": False},
        )
    except jwt.InvalidTokenError:
        return None
    subject = claims.get("sub")
    return subject if isinstance(subject, str) and subject else None


def _invalid_key(detail: str, **owner: str | None) -> AccessDenied:
    return AccessDenied(
        401,
        detail,
        event_type=INVALID_API_KEY,
        headers={"WWW-Authenticate": BASIC_CHALLENGE},
        **owner,
    )


def _split_basic(credentials: str) -> tuple[str, str]:
    malformed = _invalid_key(
        "invalid Authorization header: Basic credentials must be the base64"
        " of 'api_key:api_secret'"
    )
    if len(credentials) > MAX_CREDENTIALS_LENGTH:
        raise malformed
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise malformed from None
    api_key, separator, secret = decoded.partition(":")
    if not separator or not api_key or not secret:
        raise malformed
    return api_key, secret


async def _authenticate_api_key(request: web.Request, credentials: str) -> Identity:
    api_key, secret = _split_basic(credentials)
    database = request.app[DATABASE]
    hash_key = request.app[API_KEY_HASH_SECRET]
    key = await key_store.get_key_credentials(database, api_key)
    presented_hash = key_store.hash_api_secret(secret, hash_key)
    stored_hash = key["secret_hash"] if key else _dummy_hash(hash_key)
    matches = hmac.compare_digest(presented_hash, stored_hash)
    if key is None or not matches:
        owner = {}
        if key is not None:
            owner = {"user_id": key["user_id"], "app_id": key["app_id"]}
            owner["key_id"] = key["id"]
        raise _invalid_key("invalid API key or secret", **owner)

    now = utc_now()
    if key["expires_at"] is not None and parse_timestamp(key["expires_at"]) <= now:
        raise AccessDenied(
            401,
            f"API key {key['id']} expired at {key['expires_at']}; create a new key",
            event_type=EXPIRED_API_KEY,
            user_id=key["user_id"],
            app_id=key["app_id"],
            key_id=key["id"],
            headers={"WWW-Authenticate": BASIC_CHALLENGE},
        )
    last_used = key["last_used_at"]
    if last_used is None or now - parse_timestamp(last_used) >= LAST_USED_RESOLUTION:
        await key_store.mark_key_used(database, key["id"], now)
    return Identity(
        kind=API_KEY,
        user_id=key["user_id"],
        app_id=key["app_id"],
        key_id=key["id"],
        scopes=frozenset(key["scopes"]),
    )


def _dummy_hash(hash_key: bytes) -> str:
    return key_store.hash_api_secret(_DUMMY_SECRET, hash_key)


def require_scope(identity: Identity, scope: str) -> None:
    """Raise a 403 naming ``scope`` when an API key lacks it. Users pass."""
    if not identity.is_api_key or scope in identity.scopes:
        return
    held = ", ".join(key_store.sorted_scopes(identity.scopes)) or "none"
    raise AccessDenied(
        403,
        f"missing scope {scope}: API key {identity.key_id} has scopes {held}",
        event_type=SCOPE_DENIED,
        user_id=identity.user_id,
        app_id=identity.app_id,
        key_id=identity.key_id,
    )


def require_user_token(identity: Identity, action: str) -> None:
    """Raise a 403 when an API key tries ``action``, which only users may do."""
    if not identity.is_api_key:
        return
    raise AccessDenied(
        403,
        f"API keys cannot {action}: send a user's access token"
        " (Authorization: Bearer) instead",
        event_type=PERMISSION_DENIED,
        user_id=identity.user_id,
        app_id=identity.app_id,
        key_id=identity.key_id,
    )


async def authorize(request: web.Request, scope: str) -> Identity:
    """Authenticate the request and check that the caller has ``scope``."""
    identity = await authenticate(request)
    require_scope(identity, scope)
    return identity


async def authorize_user(request: web.Request, action: str) -> Identity:
    """Authenticate the request and reject API keys, naming ``action``."""
    identity = await authenticate(request)
    require_user_token(identity, action)
    return identity


def can_access_app(identity: Identity, app_id: str) -> bool:
    """Return whether an API key's restriction to one app allows ``app_id``.

    Ownership is checked separately, by the store queries scoped to
    ``identity.user_id``.
    """
    return identity.app_id is None or identity.app_id == app_id


def effective_app_id(identity: Identity, app_id: str | None) -> str | None:
    """Return the app a listing is limited to: an API key's own app, or ``app_id``.

    Raises a 404 when an API key names another app, as for any app the
    caller cannot see.
    """
    if not identity.is_api_key:
        return app_id
    if app_id is not None and app_id != identity.app_id:
        raise ApiError(404, f"app not found: {app_id}")
    return identity.app_id


async def authenticate_access_token(request: web.Request, token: str) -> Identity:
    """Check a user access token sent outside the Authorization header.

    A chat client sends it in the WebSocket URL or its join frame, because
    browsers cannot set headers on a WebSocket handshake.
    """
    return await _authenticate_token(request, token)


async def authenticate_api_key_secret(
    request: web.Request, api_key: str, api_secret: str
) -> Identity:
    """Check API key credentials sent outside the Authorization header."""
    pair = f"{api_key}:{api_secret}".encode()
    return await _authenticate_api_key(request, base64.b64encode(pair).decode())
