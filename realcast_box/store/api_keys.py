"""Queries on the api_keys table, and the format and hashing of key credentials.

A key's credentials are a public ``api_key`` ("rck_live_" + 32 hex digits)
and an ``api_secret`` ("rcs_live_" + 43 URL-safe base64 characters, 256
random bits). Only an HMAC-SHA256 of the secret is stored. Functions taking
``user_id`` are scoped to keys of that user's apps (the API uses these).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp, new_id, utc_now

# Scopes in the order the API lists them.
SCOPES = (
    "apps:read",
    "streams:read",
    "streams:write",
    "chat:read",
    "chat:write",
    "recordings:read",
    "recordings:write",
    "webhooks:read",
    "webhooks:write",
    "profiles:read",
    "profiles:write",
    "audit:read",
)

API_KEY_PREFIX = "rck_live_"
API_SECRET_PREFIX = "rcs_live_"
API_KEY_RANDOM_BYTES = 16
API_SECRET_RANDOM_BYTES = 32

KEY_COLUMNS = (
    "api_keys.id, api_keys.app_id, api_keys.name, api_keys.api_key,"
    " api_keys.scopes, api_keys.created_at, api_keys.expires_at,"
    " api_keys.last_used_at"
)
OWNED = "api_keys.app_id IN (SELECT apps.id FROM apps WHERE apps.user_id = ?)"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_hex(API_KEY_RANDOM_BYTES)


def new_api_secret() -> str:
    return API_SECRET_PREFIX + secrets.token_urlsafe(API_SECRET_RANDOM_BYTES)


def hash_api_secret(secret: str, hash_key: bytes) -> str:
    """Return the hex HMAC-SHA256 of ``secret`` under the box's ``hash_key``.

    A fast keyed hash is enough here, unlike for passwords, because secrets
    carry 256 random bits, so a stolen hash leaves nothing to guess. Without
    ``hash_key`` (a file in the data directory, not in the database) the
    hashes cannot even be checked.
    """
    return hmac.new(hash_key, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def sorted_scopes(scopes: Iterable[str]) -> list[str]:
    """Return ``scopes`` without duplicates, in the order of SCOPES."""
    chosen = set(scopes)
    return [scope for scope in SCOPES if scope in chosen]


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["scopes"] = json.loads(row["scopes"])
    return row


async def create_key(
    db: Database,
    app_id: str,
    name: str,
    scopes: Iterable[str],
    secret_hash: str,
    expires_at: datetime | None,
) -> dict[str, Any]:
    """Insert a key and return its row (without the secret hash)."""
    key = {
        "id": new_id("key"),
        "app_id": app_id,
        "name": name,
        "api_key": new_api_key(),
        "scopes": sorted_scopes(scopes),
        "created_at": format_timestamp(utc_now()),
        "expires_at": None if expires_at is None else format_timestamp(expires_at),
        "last_used_at": None,
    }
    await db.execute(
        "INSERT INTO api_keys (id, app_id, name, api_key, secret_hash, scopes,"
        " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key["id"],
            app_id,
            name,
            key["api_key"],
            secret_hash,
            json.dumps(key["scopes"]),
            key["created_at"],
            key["expires_at"],
        ),
    )
    return key


async def get_owned_key(
    db: Database, key_id: str, user_id: str
) -> dict[str, Any] | None:
    """Return the key if it belongs to one of ``user_id``'s apps, else None."""
    row = await db.fetchone(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE api_keys.id = ? AND {OWNED}",
        (key_id, user_id),
    )
    return _decoded(row)


def _owned_filter(user_id: str, app_id: str | None) -> tuple[str, list[Any]]:
    where = OWNED
    params: list[Any] = [user_id]
    if app_id is not None:
        where += " AND api_keys.app_id = ?"
        params.append(app_id)
    return where, params


async def list_owned_keys(
    db: Database, user_id: str, *, app_id: str | None, limit: int, skip: int
) -> list[dict[str, Any]]:
    """Return the user's keys (of one app if ``app_id``), newest first."""
    where, params = _owned_filter(user_id, app_id)
    rows = await db.fetchall(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE {where}"
        " ORDER BY api_keys.created_at DESC, api_keys.rowid DESC LIMIT ? OFFSET ?",
        (*params, limit, skip),
    )
    return [row for row in map(_decoded, rows) if row is not None]


async def count_owned_keys(db: Database, user_id: str, *, app_id: str | None) -> int:
    where, params = _owned_filter(user_id, app_id)
    row = await db.fetchone(
        f"SELECT COUNT(*) AS total FROM api_keys WHERE {where}", params
    )
    return int(row["total"]) if row else 0


async def get_key_credentials(db: Database, api_key: str) -> dict[str, Any] | None:
    """Return the key with ``api_key``, its secret hash and its app's owner.

    Unscoped: authentication uses it to find the key a request presents.
    """
    row = await db.fetchone(
        f"SELECT {KEY_COLUMNS}, api_keys.secret_hash, apps.user_id"
        " FROM api_keys JOIN apps ON apps.id = api_keys.app_id"
        " WHERE api_keys.api_key = ?",
        (api_key,),
    )
    return _decoded(row)


async def set_owned_secret_hash(
    db: Database, key_id: str, user_id: str, secret_hash: str
) -> bool:
    """Replace the key's secret hash, so the old secret fails from now on.

    Returns whether the user has such a key.
    """
    updated = await db.execute(
        f"UPDATE api_keys SET secret_hash = ? WHERE api_keys.id = ? AND {OWNED}",
        (secret_hash, key_id, user_id),
    )
    return updated > 0


async def delete_owned_key(db: Database, key_id: str, user_id: str) -> bool:
    """Delete the key and return whether the user had such a key."""
    deleted = await db.execute(
        f"DELETE FROM api_keys WHERE api_keys.id = ? AND {OWNED}", (key_id, user_id)
    )
    return deleted > 0


async def mark_key_used(db: Database, key_id: str, used_at: datetime) -> None:
    await db.execute(
        "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
        (format_timestamp(used_at), key_id),
    )
