"""Password hashing (argon2id), access tokens (HS256 JWT) and the signing secret."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path

import jwt
from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from realcast_box.errors import RealcastError
from realcast_box.store.ids import utc_now

logger = logging.getLogger(__name__)

JWT_ALGORITHM = "HS256"
# The audience claim marks a token as a user access token, so a JWT issued
# for another purpose with the same secret is not accepted as one.
ACCESS_TOKEN_AUDIENCE = "realcast-box:api"
SECRET_BYTES = 32


class InvalidToken(RealcastError):
    """An access token is malformed, has a bad signature, or has expired."""


class SecretFileError(RealcastError):
    """The signing secret file cannot be used."""


class PasswordService:
    """Hash and verify passwords with argon2id, off the event loop.

    ``hasher`` sets the argon2 cost parameters. The default is argon2-cffi's
    PasswordHasher(), its RFC 9106 low-memory profile in argon2-cffi 25.1.
    Tests pass cheaper parameters through setup_api(app, password_hasher=...).
    """

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Return whether ``password`` matches ``password_hash``.

        With no hash (an unknown email) a dummy hash is checked instead, so
        a login for an unknown email takes as long as a wrong password.
        """
        if password_hash is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
            await asyncio.to_thread(self._verify, self._dummy_hash, password)
            return False
        return await asyncio.to_thread(self._verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hasher.check_needs_rehash(password_hash)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except VerificationError:
            return False
        except InvalidHashError:
            logger.warning("stored password hash is not a valid argon2 hash")
            return False


PASSWORDS = web.AppKey("passwords", PasswordService)


def create_access_token(
    user_id: str, secret: bytes, *, expiry_minutes: int, now: datetime | None = None
) -> str:
    """Return a signed HS256 JWT for ``user_id`` valid for ``expiry_minutes``."""
    issued_at = now or utc_now()
    claims = {
        "sub": user_id,
        "aud": ACCESS_TOKEN_AUDIENCE,
        "iat": issued_at,
        "exp": issued_at + timedelta(minutes=expiry_minutes),
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def decode_access_token(token: str, secret: bytes) -> str:
    """Verify an access token and return its user id. Raises InvalidToken.

    Only HS256 is accepted, so an unsigned ("alg": "none") token fails.
    """
    # A JWT is base64url text. pyjwt raises UnicodeEncodeError, not an
    # InvalidTokenError, for the lone surrogates that aiohttp makes of header
    # bytes that are not UTF-8.
    if not token.isascii():
        raise InvalidToken("token is not a valid JWT: it contains non-ASCII characters")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            audience=ACCESS_TOKEN_AUDIENCE,
            options={"require": ["sub", "aud", "iat", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token has expired") from None
    except jwt.DecodeError:
        raise InvalidToken(
            "token is not a valid JWT; log in at /api/auth/login for a new one"
        ) from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(str(exc)) from None
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not user_id:
        raise InvalidToken("token has an invalid subject")
    return user_id


def load_or_create_secret(path: Path) -> bytes:
    """Return the signing secret stored at ``path``, creating it on first use.

    A new secret is 32 random bytes, written to a temporary file created with
    mode 0600 and then linked into place, so no reader ever sees a partial
    file or one readable by others. An existing file is used as it is.
    Raises SecretFileError for an empty or short file.
    """
    path = Path(path)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass

    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(SECRET_BYTES)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secret)
            file.flush()
            os.fsync(file.fileno())
        # link() fails if another process created the file first, and then
        # that process's secret wins.
        os.link(temporary, path)
    except FileExistsError:
        return _read_secret(path)
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("created signing secret %s", path)
    return secret


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes()
    if len(secret) < SECRET_BYTES:
        raise SecretFileError(
            f"signing secret {path} is {len(secret)} bytes, expected at least "
            f"{SECRET_BYTES}; delete it to create a new one (this signs out "
            "every user)"
        )
    return secret
