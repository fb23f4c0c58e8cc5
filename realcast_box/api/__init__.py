"""The REST API under /api: auth, apps and streams.

``setup_api`` adds the JSON error middleware and the routes. Handlers read
the config, database, hub and JWT secret from the application (the keys in
realcast_box.appkeys) on each request, so app.py may set them after this
call, as long as it does so before the server starts.
"""

from __future__ import annotations

from aiohttp import web
from argon2 import PasswordHasher

from realcast_box.api import apps, auth, streams
from realcast_box.api.errors import error_middleware
from realcast_box.api.security import PASSWORDS, PasswordService


def setup_api(
    app: web.Application, *, password_hasher: PasswordHasher | None = None
) -> None:
    """Add the error middleware and every /api route to ``app``.

    ``password_hasher`` sets the argon2id cost parameters, by default those of
    argon2-cffi's PasswordHasher(). Tests pass a cheap one to run fast.
    """
    # First in the list is outermost, so errors from later middlewares are
    # turned into JSON too.
    app.middlewares.insert(0, error_middleware)
    app[PASSWORDS] = PasswordService(password_hasher)
    app.add_routes(auth.routes)
    app.add_routes(apps.routes)
    app.add_routes(streams.routes)
