"""User accounts made from the command line, with the register API's rules.

The email and password go through the same checks as ``POST
/api/auth/register``, and the password through the same argon2id hasher,
so the user logs in over the API like any other. The database is opened
with Database.open, the box's own code, so a stopped box's database is
created or migrated first. While a box runs, the insert waits for its
writer up to the database's busy timeout.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, TextIO

from realcast_box.api import validation
from realcast_box.api.errors import ApiError
from realcast_box.api.security import PasswordService
from realcast_box.errors import RealcastError
from realcast_box.store import users as user_store
from realcast_box.store.audit import AuditEntry, insert_entries
from realcast_box.store.db import Database, StoreError

DATABASE_FILE = "realcast.db"


class UserCreateError(RealcastError):
    """The user cannot be created; the message names the cause and the fix."""


def read_password_stdin(stream: TextIO) -> str:
    """Return the first line of ``stream`` without its line ending.

    Only the line ending is removed: spaces are part of a password.
    """
    line = stream.readline()
    return line.removesuffix("\n").removesuffix("\r")


def check_fields(email: str, password: str, full_name: str) -> tuple[str, str, str]:
    """Check the fields as the register API does; UserCreateError names the field."""
    fields = {"email": email, "password": password, "full_name": full_name}
    for field, value in fields.items():
        _require_utf8(value, field)
    try:
        email = validation.email_value(email, "email")
        password = validation.password_value(password, "password")
        full_name = validation.optional_text(
            full_name, "full_name", max_length=validation.MAX_NAME_LENGTH
        )
    except ApiError as exc:
        raise UserCreateError(exc.detail) from None
    return email, password, full_name.strip()


def _require_utf8(value: str, field: str) -> None:
    """Raise UserCreateError when ``value`` came from bytes that are not UTF-8.

    Python decodes such argv and stdin bytes to lone surrogates, which the
    password hasher and SQLite cannot encode.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserCreateError(
            f"{field}: not valid UTF-8; type it in a UTF-8 terminal or convert"
            " the input, for example with iconv -f latin1 -t utf-8"
        ) from None


async def create_user(
    data_path: Path,
    email: str,
    password: str,
    full_name: str = "",
    *,
    passwords: PasswordService | None = None,
) -> dict[str, Any]:
    """Insert a user into the database of ``data_path`` and return its row.

    Raises UserCreateError for an invalid field, a taken email or a database
    that cannot be opened. An audit entry records the registration.
    """
    email, password, full_name = check_fields(email, password, full_name)
    # Hashed before the database is opened, so a running box's writer is
    # never kept waiting for the argon2 work.
    password_hash = await (passwords or PasswordService()).hash(password)
    database_path = Path(data_path) / DATABASE_FILE
    try:
        Path(data_path).mkdir(mode=0o700, parents=True, exist_ok=True)
        database = await Database.open(database_path)
    except OSError as exc:
        raise UserCreateError(f"cannot open database {database_path}: {exc}") from None
    except StoreError as exc:
        # Most StoreError messages already name the database file.
        detail = str(exc)
        if str(database_path) not in detail:
            detail = f"cannot open database {database_path}: {detail}"
        raise UserCreateError(detail) from None
    try:
        _restrict(database_path)
        return await _insert_user(database, email, full_name, password_hash)
    except sqlite3.Error as exc:
        raise UserCreateError(
            f"cannot write to database {database_path}: {exc}"
        ) from None
    finally:
        await database.close()


async def _insert_user(
    database: Database, email: str, full_name: str, password_hash: str
) -> dict[str, Any]:
    if await user_store.get_user_by_email(database, email) is not None:
        raise UserCreateError(f"email {email!r} is already registered")
    try:
        user = await user_store.create_user(database, email, full_name, password_hash)
    except user_store.DuplicateEmail:
        raise UserCreateError(f"email {email!r} is already registered") from None
    await insert_entries(
        database,
        [
            AuditEntry(
                action="register",
                user_id=user["id"],
                resource_type="user",
                resource_id=user["id"],
                detail="created with realcast-box user create",
            )
        ],
    )
    return user


def _restrict(database_path: Path) -> None:
    """Make a database that this command created readable by its owner alone.

    When root runs the command on a data directory of another user (the
    box's service account), the files are given to that user, so the box
    can still open them.
    """
    owner = database_path.parent.stat()
    give_away = os.geteuid() == 0 and owner.st_uid != 0
    for suffix in ("", "-wal", "-shm"):
        candidate = database_path.with_name(database_path.name + suffix)
        if candidate.exists():
            os.chmod(candidate, 0o600)
            if give_away:
                os.chown(candidate, owner.st_uid, owner.st_gid)
