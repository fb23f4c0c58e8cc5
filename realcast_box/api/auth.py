"""Routes under /api/auth: register, login and me.

Authentication itself (Bearer access tokens and API keys) is in
realcast_box.api.identity. Logins, failed logins and registrations are
recorded in the audit log.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aiohttp import web

from realcast_box.api import audit, validation
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import authorize_user
from realcast_box.api.ratelimit import limit_login_email
from realcast_box.api.security import PASSWORDS, create_access_token
from realcast_box.appkeys import CONFIG, DATABASE, JWT_SECRET
from realcast_box.store import users as user_store

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

REGISTER_FIELDS = (
    validation.Field("email", validation.email_value, required=True),
    validation.Field("password", validation.password_value, required=True),
    validation.Field(
        "full_name",
        functools.partial(
            validation.optional_text, max_length=validation.MAX_NAME_LENGTH
        ),
    ),
)
LOGIN_FIELDS = (
    validation.Field(
        "email",
        functools.partial(validation.text, max_length=validation.MAX_EMAIL_LENGTH),
        required=True,
    ),
    validation.Field(
        "password",
        functools.partial(validation.password_value, check_minimum=False),
        required=True,
    ),
)
LOGIN_FAILED = "incorrect email or password"


def unauthorized(detail: str) -> ApiError:
    """Return a 401 ApiError with the WWW-Authenticate challenge of RFC 6750."""
    return ApiError(401, detail, headers={"WWW-Authenticate": "Bearer"})


def user_json(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": user["id"],
        "email": user["email"],
        "full_name": user["full_name"],
        "created_at": user["created_at"],
    }


async def require_user(request: web.Request) -> dict[str, Any]:
    """Return the user whose access token authorizes the request.

    Raises the 401 of ``authenticate``, and a 403 for an API key. Handlers
    of app resources call identity.authorize instead, so API keys work too.
    """
    identity = await authorize_user(request, "use this endpoint")
    user = await user_store.get_user(request.app[DATABASE], identity.user_id)
    if user is None:
        raise unauthorized(f"user {identity.user_id} no longer exists")
    return user


@routes.post("/api/auth/register")
async def register(request: web.Request) -> web.Response:
    await reject_api_key(request, "register users")
    fields = await validation.read_fields(request, REGISTER_FIELDS)
    email, password = fields["email"], fields["password"]
    full_name = fields.get("full_name", "").strip()

    database = request.app[DATABASE]
    duplicate = ApiError(409, f"email: {email!r} is already registered")
    if await user_store.get_user_by_email(database, email) is not None:
        raise duplicate
    password_hash = await request.app[PASSWORDS].hash(password)
    try:
        user = await user_store.create_user(database, email, full_name, password_hash)
    except user_store.DuplicateEmail:
        raise duplicate from None
    audit.record_user_event(request, "register", user["id"])
    logger.info("registered user %s", user["id"])
    return web.json_response(user_json(user), status=201)


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    fields = await validation.read_fields(request, LOGIN_FIELDS)
    email, password = fields["email"], fields["password"]
    await limit_login_email(request, email)

    database = request.app[DATABASE]
    passwords = request.app[PASSWORDS]
    user = await user_store.get_user_by_email(database, email)
    # verify() runs for unknown emails too, so both failures take equally long.
    stored_hash = None if user is None else user["password_hash"]
    matches = await passwords.verify(stored_hash, password)
    if user is None or not matches:
        # The entry goes to the account whose email was tried, so its owner
        # sees attempts on it. Neither the email nor the password is stored.
        await audit.record_security_event(
            request.app,
            request,
            "login_failed",
            "login with an unknown email"
            if user is None
            else "login with a wrong password",
            None if user is None else user["id"],
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
    audit.record_user_event(request, "login", user["id"])
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
    identity = await authorize_user(request, "use /api/auth/me, which returns a user")
    user = await user_store.get_user(request.app[DATABASE], identity.user_id)
    if user is None:
        raise unauthorized(f"user {identity.user_id} no longer exists")
    return web.json_response(user_json(user))


async def reject_api_key(request: web.Request, action: str) -> None:
    """Raise a 403 when the request presents API key (Basic) credentials.

    Other Authorization headers are ignored here, because the route needs
    no authentication.
    """
    header = request.headers.get("Authorization", "")
    if header.partition(" ")[0].lower() == "basic":
        await authorize_user(request, action)
