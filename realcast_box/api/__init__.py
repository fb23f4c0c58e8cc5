"""The REST API under /api: one module per resource, plus the error middleware.

``setup_api`` adds the JSON error middleware, the security event middleware
and the routes. Handlers read the config, database, hub, secrets and audit
writer from the application (the keys in realcast_box.appkeys,
identity.API_KEY_HASH_SECRET and audit.AUDIT_WRITER) on each request, so
app.py may set them after this call, as long as it does so before the
server starts.
"""

from __future__ import annotations

from aiohttp import web
from argon2 import PasswordHasher

from realcast_box.api import (
    apps,
    audit,
    auth,
    chat,
    keys,
    openapi,
    playback,
    profiles,
    recordings,
    streams,
    system,
    webhooks,
)
from realcast_box.api.errors import error_middleware
from realcast_box.api.security import PASSWORDS, PasswordService


def setup_api(
    app: web.Application, *, password_hasher: PasswordHasher | None = None
) -> None:
    """Add the middlewares and every /api route to ``app``.

    ``password_hasher`` sets the argon2id cost parameters, by default those of
    argon2-cffi's PasswordHasher(). Tests pass a cheap one to run fast.
    """
    # First in the list is outermost, so errors from later middlewares are
    # turned into JSON too. The security middleware sits inside it, so it
    # sees each AccessDenied before it becomes a response.
    app.middlewares.insert(0, error_middleware)
    app.middlewares.insert(1, audit.security_middleware)
    app[PASSWORDS] = PasswordService(password_hasher)
    app.add_routes(auth.routes)
    app.add_routes(apps.routes)
    app.add_routes(streams.routes)
    app.add_routes(playback.routes)
    app.add_routes(profiles.routes)
    app.add_routes(system.routes)
    app[system.ENCODERS] = system.EncoderCache()
    app.add_routes(keys.routes)
    app.add_routes(audit.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(recordings.routes)
    app.add_routes(openapi.routes)
    chat.setup_chat(app)
