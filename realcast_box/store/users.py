"""Queries on the users table."""

from __future__ import annotations

import sqlite3
from typing import Any

from realcast_box.errors import RealcastError
from realcast_box.store.db import Database
from realcast_box.store.ids import format_timestamp, new_id, utc_now

USER_COLUMNS = "id, email, full_name, password_hash, created_at"


class DuplicateEmail(RealcastError):
    """Another user already has this email address (compared case-insensitively)."""


def email_key(email: str) -> str:
    """Return the lookup form of an email address: duplicates ignore case."""
    return email.lower()


async def create_user(
    db: Database, email: str, full_name: str, password_hash: str
) -> dict[str, Any]:
    """Insert a user and return its row. Raises DuplicateEmail."""
    user = {
        "id": new_id("user"),
        "email": email,
        "full_name": full_name,
        "password_hash": password_hash,
        "created_at": format_timestamp(utc_now()),
    }
    try:
        await db.execute(
            "INSERT INTO users (id, email, email_key, full_name, password_hash,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                user["id"],
                email,
                email_key(email),
                full_name,
                password_hash,
                user["created_at"],
            ),
        )
    except sqlite3.IntegrityError as exc:
        if "email_key" not in str(exc):
            raise
        raise DuplicateEmail(f"a user with email {email!r} already exists") from exc
    return user


async def get_user(db: Database, user_id: str) -> dict[str, Any] | None:
    return await db.fetchone(
        f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,)
    )


async def get_user_by_email(db: Database, email: str) -> dict[str, Any] | None:
    return await db.fetchone(
        f"SELECT {USER_COLUMNS} FROM users WHERE email_key = ?", (email_key(email),)
    )


async def set_password_hash(db: Database, user_id: str, password_hash: str) -> None:
    await db.execute(
        "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
    )


async def delete_user(db: Database, user_id: str) -> bool:
    """Delete a user with their apps and streams and return whether the user existed."""
    return await db.execute("DELETE FROM users WHERE id = ?", (user_id,)) > 0
