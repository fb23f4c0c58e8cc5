"""Audit logs: recording API actions and security events, listing and pruning them.

Mutating handlers are wrapped in ``audited``, which records one entry per call
with its outcome. Security events come from three places. The first is
AccessDenied errors (bad credentials, scope and permission denials), which
``security_middleware`` records. The second is explicit
``record_security_event`` calls (failed logins, the rate limiter). The third
is the RTMP server's ``record_rejected_publish`` hook. Entries go
through the AuditWriter queue, so recording never waits for the database.

A user sees the entries whose ``user_id`` is theirs: their own actions, those
of their API keys, and events about their apps, keys and email address. An
API key with audit:read sees the entries of its app.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from realcast_box.api import validation
from realcast_box.api.client_address import client_ip
from realcast_box.api.errors import ApiError
from realcast_box.api.identity import (
    AccessDenied,
    authorize,
    cached_identity,
    effective_app_id,
)
from realcast_box.appkeys import DATABASE
from realcast_box.store import audit as audit_store
from realcast_box.store import streams as stream_store
from realcast_box.store.audit import AuditEntry, AuditFilter, AuditWriter
from realcast_box.store.db import Database
from realcast_box.store.ids import utc_now

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

AUDIT_WRITER = web.AppKey("audit_writer", AuditWriter)
# (resource_id, app_id) of the entry that ``audited`` records for a request.
AUDIT_TARGET = web.RequestKey("audit_target", tuple)
SECURITY_EVENT_RECORDED = web.RequestKey("security_event_recorded", bool)

MAX_USER_AGENT_LENGTH = 512
MAX_DAYS = 3650
MAX_ACTION_LENGTH = 100
# An action name, or the start of one followed by "*" for a prefix match.
ACTION_PATTERN = re.compile(r"[A-Za-z0-9_.-]+\*?")
PRUNE_INTERVAL = timedelta(days=1)
RTMP_INVALID_STREAM_KEY = "rtmp_invalid_stream_key"

# The JSON of an entry carries every stored column.
ENTRY_FIELDS = audit_store.ENTRY_COLUMNS


def submit(app: web.Application, entry: AuditEntry) -> None:
    """Queue ``entry`` on the application's AuditWriter."""
    writer = app.get(AUDIT_WRITER)
    if writer is None:
        logger.warning("no audit writer running: dropped entry %s", entry.action)
        return
    writer.submit(entry)


def user_agent(request: web.Request) -> str | None:
    """Return the User-Agent header, cut, in text that SQLite can store.

    aiohttp decodes header bytes that are not UTF-8 to lone surrogates, which
    would fail the whole batch of the audit writer, so they become "?".
    """
    agent = request.headers.get("User-Agent")
    if agent is None:
        return None
    return agent[:MAX_USER_AGENT_LENGTH].encode("utf-8", "replace").decode("utf-8")


async def record_security_event(
    app: web.Application,
    request: web.Request | None,
    event_type: str,
    detail: str,
    user_id: str | None = None,
    app_id: str | None = None,
    *,
    api_key_id: str | None = None,
) -> None:
    """Record a failed or suspicious request as a security event.

    ``event_type`` becomes the entry's action (such as "login_failed" or
    "rate_limit_exceeded"). ``user_id`` and ``app_id`` decide which users can
    list the entry. Without them, only the box's operator can read it in the
    database.
    ``detail`` is stored and logged, so it must never hold a secret.
    """
    entry = AuditEntry(
        action=event_type,
        status="failure",
        user_id=user_id,
        app_id=app_id,
        api_key_id=api_key_id,
        ip_address=None if request is None else client_ip(request),
        user_agent=None if request is None else user_agent(request),
        security_event=True,
        detail=detail,
    )
    logger.info(
        "security event %s (user %s, app %s) from %s: %s",
        event_type,
        user_id or "unknown",
        app_id or "none",
        entry.ip_address or "unknown",
        detail,
    )
    submit(app, entry)


@web.middleware
async def security_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Record each AccessDenied that a handler raises as a security event."""
    try:
        return await handler(request)
    except AccessDenied as exc:
        if not request.get(SECURITY_EVENT_RECORDED):
            request[SECURITY_EVENT_RECORDED] = True
            await record_security_event(
                request.app,
                request,
                exc.event_type,
                f"{exc.detail} ({request.method} {request.path})",
                exc.user_id,
                exc.app_id,
                api_key_id=exc.key_id,
            )
        raise


def set_target(
    request: web.Request, resource_id: str | None, app_id: str | None = None
) -> None:
    """Name the resource and app of the entry that ``audited`` records."""
    request[AUDIT_TARGET] = (resource_id, app_id)


def audited(
    action: str, resource_type: str, *, security_event: bool = False
) -> Callable[[Handler], Handler]:
    """Wrap a mutating handler so that each call by a known caller is recorded.

    The handler names its resource with ``set_target``; otherwise the first
    path parameter is the resource id. Failures are recorded with the error's
    detail, except AccessDenied, which already is a security event, and
    requests that never authenticated, which have nobody to show it to.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            outcome = functools.partial(
                _record_action, request, action, resource_type, security_event
            )
            try:
                response = await handler(request)
            except AccessDenied:
                raise
            except ApiError as exc:
                outcome("failure", exc.detail)
                raise
            except Exception:
                outcome("failure", "internal server error")
                raise
            outcome("success", "")
            return response

        return wrapper

    return decorate


def _record_action(
    request: web.Request,
    action: str,
    resource_type: str,
    security_event: bool,
    status: str,
    detail: str,
) -> None:
    identity = cached_identity(request)
    if identity is None:
        return
    default_id = next(iter(request.match_info.values()), None)
    resource_id, app_id = request.get(AUDIT_TARGET, (default_id, None))
    submit(
        request.app,
        AuditEntry(
            action=action,
            status=status,
            user_id=identity.user_id,
            app_id=app_id or identity.app_id,
            api_key_id=identity.key_id,
            resource_type=resource_type,
            resource_id=resource_id,
            ip_address=client_ip(request),
            user_agent=user_agent(request),
            security_event=security_event,
            detail=detail,
        ),
    )


def record_user_event(
    request: web.Request,
    action: str,
    user_id: str,
    *,
    status: str = "success",
    detail: str = "",
) -> None:
    """Record an action on a user account itself, such as register or login."""
    submit(
        request.app,
        AuditEntry(
            action=action,
            status=status,
            user_id=user_id,
            resource_type="user",
            resource_id=user_id,
            ip_address=client_ip(request),
            user_agent=user_agent(request),
            detail=detail,
        ),
    )


async def record_rejected_publish(
    app: web.Application, client_address: str, stream_id: str | None
) -> None:
    """Record an RTMP publish whose stream key matched no stream.

    ``stream_id`` is the stream that the rejected key names, if it has the
    shape of a stream key. When that stream exists the key is an old one
    (reset since) or a wrong one, and the event goes to the stream's owner.
    """
    # Imported here because ratelimit.py imports this module.
    from realcast_box.api.ratelimit import RATE_LIMITER, Limit

    # One event per client address a minute: a client retrying bad keys,
    # or forging keys that name someone's stream, cannot flood the log.
    host = client_address.rsplit(":", 1)[0] if ":" in client_address else None
    limiter = app.get(RATE_LIMITER)
    if limiter is not None:
        once_a_minute = Limit("rtmp_rejected_publish", 1, 60)
        decision = limiter.hit(f"address:{host or client_address}", [once_a_minute])
        if not decision.allowed:
            return

    stream = None
    if stream_id is not None:
        stream = await stream_store.get_stream_owner(app[DATABASE], stream_id)
    if stream is None:
        detail = f"RTMP publish from {client_address} with an unknown stream key"
        user_id = app_id = None
    else:
        detail = (
            f"RTMP publish from {client_address} to stream {stream_id} with a"
            " key that is not its current one (reset or mistyped)"
        )
        user_id, app_id = stream["user_id"], stream["app_id"]
    entry = AuditEntry(
        action=RTMP_INVALID_STREAM_KEY,
        status="failure",
        user_id=user_id,
        app_id=app_id,
        resource_type=None if stream is None else "stream",
        resource_id=None if stream is None else stream_id,
        ip_address=host or client_address,
        security_event=True,
        detail=detail,
    )
    logger.info("security event %s: %s", RTMP_INVALID_STREAM_KEY, detail)
    submit(app, entry)


def action_query(request: web.Request) -> tuple[str | None, bool]:
    """Return the ``action`` query parameter without its "*" and whether it had one."""
    value = request.query.get("action")
    if value is None:
        return None, False
    if len(value) > MAX_ACTION_LENGTH:
        raise validation.bad_request(
            "action", f"must be at most {MAX_ACTION_LENGTH} characters"
        )
    if not ACTION_PATTERN.fullmatch(value):
        raise validation.bad_request(
            "action",
            "must be an action name of letters, digits, '_', '.' or '-',"
            f" optionally followed by '*' for a prefix match, got {value!r}",
        )
    if value.endswith("*"):
        return value[:-1], True
    return value, False


def entry_json(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: entry[name] for name in ENTRY_FIELDS}


async def _list_entries(request: web.Request, *, security_only: bool) -> web.Response:
    identity = await authorize(request, "audit:read")
    limit, skip = validation.pagination(request)
    app_id = effective_app_id(identity, validation.query_id(request, "app_id"))
    days = validation.optional_query_int(request, "days", minimum=1, maximum=MAX_DAYS)
    action, action_is_prefix = action_query(request)
    selection = AuditFilter(
        user_id=identity.user_id,
        app_id=app_id,
        since=None if days is None else utc_now() - timedelta(days=days),
        security_only=security_only,
        action=action,
        action_is_prefix=action_is_prefix,
    )
    database = request.app[DATABASE]
    entries = await audit_store.list_entries(
        database, selection, limit=limit, skip=skip
    )
    total = await audit_store.count_entries(database, selection)
    return validation.page_response([entry_json(entry) for entry in entries], total)


@routes.get("/api/audit-logs")
async def list_audit_logs(request: web.Request) -> web.Response:
    return await _list_entries(request, security_only=False)


@routes.get("/api/audit-logs/security-events")
async def list_security_events(request: web.Request) -> web.Response:
    return await _list_entries(request, security_only=True)


async def prune(database: Database, retention_days: int) -> int:
    """Delete entries older than ``retention_days`` and return how many went."""
    cutoff = utc_now() - timedelta(days=retention_days)
    deleted = await audit_store.prune_entries(database, cutoff)
    if deleted:
        logger.info(
            "pruned %d audit entries older than %d days", deleted, retention_days
        )
    return deleted


async def run_pruner(
    database: Database, retention_days: int, *, interval: float | None = None
) -> None:
    """Prune at once, then every ``interval`` seconds (a day by default)."""
    seconds = PRUNE_INTERVAL.total_seconds() if interval is None else interval
    while True:
        try:
            await prune(database, retention_days)
        except Exception:
            logger.exception("failed to prune audit entries; retrying in %gs", seconds)
        await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def running_audit(
    app: web.Application, database: Database, retention_days: int
) -> AsyncIterator[AuditWriter]:
    """Run the audit writer and the daily pruner while the context is open.

    On exit the pruner stops and every queued entry is written, so close
    the database only after this context.
    """
    writer = AuditWriter(database)
    writer.start()
    app[AUDIT_WRITER] = writer
    pruner = asyncio.create_task(
        run_pruner(database, retention_days), name="audit-pruner"
    )
    try:
        yield writer
    finally:
        pruner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruner
        await writer.close()
        if writer.dropped or writer.failed:
            logger.warning(
                "audit log lost %d entries to a full queue and %d to write errors",
                writer.dropped,
                writer.failed,
            )


PublishRejectedHook = Callable[[str, str | None], Awaitable[None]]


def rejected_publish_hook(app: web.Application) -> PublishRejectedHook:
    """Return the RTMP server's hook for a publish with an invalid stream key."""
    return functools.partial(record_rejected_publish, app)
