"""Routes under /api/auth (register, login, me) and bearer-token authentication.

Every other handler calls ``require_user`` to get the user behind the
request's ``Authorization: Bearer <jwt>`` header.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from realcast_box.api import validation
from realcast_box.api.errors import ApiError
from realcast_box.api.security import (
    PASSWORDS,
    InvalidToken,
    create_access_token,
    decode_access_token,
)
from realcast_box.appkeys import CONFIG, DATABASE, JWT_SECRET
from realcast_box.store import users as user_store

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

REGISTER_FIELDS = ("email", "password", "full_name")
LOGIN_FIELDS = ("email", "password")
LOGIN_FAILED = "incorrect email or password"


def unauthorized(detail: str, *, invalid_token: bool = False) -> ApiError:
    """Return a 401 ApiError with the WWW-Authenticate challenge of RFC 6750."""
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return ApiError(401, detail, headers={"WWW-Authenticate": challenge})


def user_json(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": user["id"],
        "email": user["email"],
        "full_name": user["full_name"],
        "created_at": user["created_at"],
    }


async def require_user(request: web.Request) -> dict[str, Any]:
    """Return the user whose access token authorizes the request.

    Raises a 401 ApiError when the header is missing or malformed, the token
    is invalid or expired, or its user has been deleted.
    """
    header = request.headers.get("Authorization")
    if not header:
        raise unauthorized("missing Authorization header: send 'Bearer <token>'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("invalid Authorization header: send 'Bearer <token>'")
    try:
        user_id = decode_access_token(token, request.app[JWT_SECRET])
    except InvalidToken as exc:
        raise unauthorized(f"invalid access token: {exc}", invalid_token=True) from None
    user = await user_store.get_user(request.app[DATABASE], user_id)
    if user is None:
        raise unauthorized(
            f"invalid access token: user {user_id} no longer exists",
            invalid_token=True,
        )
    return user


@routes.post("/api/auth/register")
async def register(request: web.Request) -> web.Response:
    body = await validation.read_json_object(request, allowed=REGISTER_FIELDS)
    email = validation.email_address(body)
    password = validation.password(body)
    full_name = validation.optional_text(
        body.get("full_name"), "full_name", max_length=validation.MAX_NAME_LENGTH
    ).strip()

    database = request.app[DATABASE]
    duplicate = ApiError(409, f"email: {email!r} is already registered")
    if await user_store.get_user_by_email(database, email) is not None:
        raise duplicate
    password_hash = await request.app[PASSWORDS].hash(password)
    try:
        user = await user_store.create_user(database, email, full_name, password_hash)
    except user_store.DuplicateEmail:
        raise duplicate from None
    logger.info("registered user %s", user["id"])
    return web.json_response(user_json(user), status=201)


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await validation.read_json_object(request, allowed=LOGIN_FIELDS)
    email = validation.required_text(
        body, "email", max_length=validation.MAX_EMAIL_LENGTH
    )
    password = validation.password(body, check_minimum=False)

    database = request.app[DATABASE]
    passwords = request.app[PASSWORDS]
    user = await user_store.get_user_by_email(database, email)
    # verify() runs for unknown emails too, so both failures take equally long.
    stored_hash = None if user is None else user["password_hash"]
    matches = await passwords.verify(stored_hash, password)
    if user is None or not matches:
        logger.info(
            "login failed for %s", "an unknown email" if user is None else user["id"]
        )
        raise unauthorized(LOGIN_FAILED)

    if passwords.needs_rehash(user["password_hash"]):
        new_hash = await passwords.hash(password)
        await user_store.set_password_hash(database, user["id"], new_hash)
    token = create_access_token(
        user["id"],
        request.app[JWT_SECRET],
        expiry_minutes=request.app[CONFIG].token_expiry_minutes,
    )
    return web.json_response(
        {
            "access_token": token,
            "token_type": "bearer",
            "user": {
                "id": user["id"],
                "email": user["email"],
                "full_name": user["full_name"],
            },
        }
    )


@routes.get("/api/auth/me")
async def me(request: web.Request) -> web.Response:
    user = await require_user(request)
    return web.json_response(user_json(user))
