"""Composition root: builds the aiohttp application and runs the box.

Start order: data directory and secrets, database (migrations), H.264
encoder probe, audit writer and pruner, webhook dispatcher and the outbox's
event subscription, recording service (recovery), hub, stream watcher, RTMP
server (and RTMPS when a TLS certificate is configured). Stop order is the
reverse, so publishers are closed, their playlists ended, their recordings
finalized and their stream.offline events stored before the database goes
away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from realcast_box import __version__, tls
from realcast_box.api import audit, setup_api
from realcast_box.api import recordings as recordings_api
from realcast_box.api import webhooks as webhooks_api
from realcast_box.api.chat_socket import CHAT_HUB
from realcast_box.api.identity import API_KEY_HASH_SECRET
from realcast_box.api.ratelimit import setup_rate_limits
from realcast_box.api.security import load_or_create_secret
from realcast_box.api.system import ENCODERS
from realcast_box.appkeys import (
    CONFIG,
    DATABASE,
    HUB,
    JWT_SECRET,
    RECORDINGS,
    RTMP_SERVER,
)
from realcast_box.config import Config
from realcast_box.errors import StartupError
from realcast_box.events import EventBus
from realcast_box.hls.playback import PLAYBACK_SECRET, PLAYBACK_SECRET_FILE
from realcast_box.hls.routes import setup_hls_routes
from realcast_box.hls.viewers import VIEWERS
from realcast_box.hls.vod import setup_vod_routes
from realcast_box.live.hub import Hub
from realcast_box.live.recordings import RecordingService
from realcast_box.live.session_events import unfinished_session_event
from realcast_box.live.watch import StreamWatcher
from realcast_box.media.encoders import probe_encoders_async
from realcast_box.metrics import setup_metrics
from realcast_box.rtmp.server import RtmpServer
from realcast_box.store import streams as stream_store
from realcast_box.store.db import Database
from realcast_box.ui import setup_ui
from realcast_box.webhooks.dispatcher import Dispatcher, DispatchSettings, RetryPolicy
from realcast_box.webhooks.outbox import Outbox
from realcast_box.webhooks.urls import DenyList

logger = logging.getLogger(__name__)

# The server context of RTMPS and HTTPS, or None without a configured certificate.
TLS_CONTEXT = web.AppKey("tls_context", ssl.SSLContext | None)
EVENTS = web.AppKey("events", EventBus)
JWT_SECRET_FILE = "jwt-secret.key"
API_KEY_HASH_SECRET_FILE = "api-key-hash.key"


# Whether the last /healthz failed to read the data directory's disk
# usage, so that a failure that lasts is logged once, not on every poll.
_disk_usage_failing = False


async def healthz(request: web.Request) -> web.Response:
    global _disk_usage_failing
    # Free space of the data directory's disk, in bytes: recordings stop
    # below recordings_min_free_mb, so the admin UI shows it. Both values
    # are null when the directory cannot be read.
    try:
        usage = shutil.disk_usage(request.app[CONFIG].data_path)
        free, total = usage.free, usage.total
        _disk_usage_failing = False
    except OSError as exc:
        if not _disk_usage_failing:
            logger.warning(
                "failed to read the disk usage of the data directory: %s", exc
            )
        _disk_usage_failing = True
        free = total = None
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "data_disk_free_bytes": free,
            "data_disk_total_bytes": total,
        }
    )


def create_app(config: Config) -> web.Application:
    """Build the application; its cleanup context starts and stops every part.

    Raises ConfigError when the TLS certificate or key cannot be used.
    """
    app = web.Application(client_max_size=1024 * 1024)
    app[CONFIG] = config
    app[TLS_CONTEXT] = tls.server_context(config)
    setup_api(app)
    setup_rate_limits(app)
    setup_hls_routes(app)
    setup_vod_routes(app)
    app.router.add_get("/healthz", healthz)
    setup_ui(app)
    # Last, because its middleware must be the outermost one.
    setup_metrics(app)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    data_path = config.data_path
    # The data directory contains stream keys, webhook secrets and password
    # hashes, so a new one is readable by the box's user alone.
    data_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    hls_root = data_path / "hls"
    hls_root.mkdir(exist_ok=True)
    app[JWT_SECRET] = load_or_create_secret(data_path / JWT_SECRET_FILE)
    app[API_KEY_HASH_SECRET] = load_or_create_secret(
        data_path / API_KEY_HASH_SECRET_FILE
    )
    # Playback tokens have a secret of their own, so a leaked playback secret
    # cannot sign user access tokens.
    app[PLAYBACK_SECRET] = load_or_create_secret(data_path / PLAYBACK_SECRET_FILE)

    # Each part is closed by the exit stack in reverse order, also when a
    # later part fails to start (a port in use), so no thread is left behind.
    async with contextlib.AsyncExitStack() as stack:
        database = await Database.open(data_path / "realcast.db")
        _restrict_database_files(data_path / "realcast.db")
        stack.push_async_callback(database.close)
        app[DATABASE] = database
        unfinished = await stream_store.reset_live_streams(database, datetime.now(UTC))
        if unfinished:
            logger.warning(
                "marked %d streams offline that were live at last stop",
                len(unfinished),
            )
        await _probe_encoders(app)
        # Entered before the hub and the RTMP server, so it stops after them
        # and writes the entries they queue while closing.
        await stack.enter_async_context(
            audit.running_audit(app, database, config.audit_retention_days)
        )

        events = EventBus()
        app[EVENTS] = events
        app[CHAT_HUB].events = events
        # Entered before the hub, so the stream.offline events of the
        # sessions that the hub ends while closing are still stored.
        await _start_webhooks(app, stack, database, events)
        # The sessions a crash left open end now; their webhooks hear it.
        for row in unfinished:
            await events.publish(unfinished_session_event(row))

        hub = Hub(
            database,
            hls_root,
            segment_duration=config.hls_segment_duration,
            window=config.hls_window,
            takeover_after=config.rtmp_takeover_after,
            reconnect_window=config.reconnect_window_seconds,
            choose_encoder=app[ENCODERS].choose,
            events=events,
            part_duration=config.hls_part_duration if config.hls_low_latency else None,
        )
        app[HUB] = hub
        # Registered before the hub's close, so it runs after it: the
        # sessions that the hub ends while closing are still finalized.
        await _start_recordings(app, stack, database, hub, events)
        stack.push_async_callback(hub.close)
        watcher = StreamWatcher(
            hub,
            database,
            events,
            segment_duration=config.hls_segment_duration,
            viewers=app.get(VIEWERS),
        )
        watcher.start()
        stack.push_async_callback(watcher.close)
        rtmp_server = RtmpServer(
            hub,
            database,
            read_timeout=config.rtmp_read_timeout,
            max_message_size=config.rtmp_max_message_size,
            on_invalid_stream_key=audit.rejected_publish_hook(app),
            max_connections=config.rtmp_max_connections,
        )
        stack.push_async_callback(rtmp_server.close)
        try:
            await rtmp_server.start(config.host, config.rtmp_port)
        except OSError as exc:
            raise StartupError(
                f"cannot listen for RTMP on {config.host}:{config.rtmp_port} "
                f"(rtmp_port): {exc.strerror or exc}; stop the other program or "
                "choose another port with --rtmp-port"
            ) from None
        app[RTMP_SERVER] = rtmp_server
        if app[TLS_CONTEXT] is not None:
            try:
                await rtmp_server.start_tls(
                    config.host, config.rtmps_port, app[TLS_CONTEXT]
                )
            except OSError as exc:
                raise StartupError(
                    f"cannot listen for RTMPS on {config.host}:{config.rtmps_port}"
                    f" (rtmps_port): {exc.strerror or exc}; stop the other program"
                    " or choose another port with the rtmps_port setting"
                ) from None
        # With port 0 the system picks the port; stream URLs need the real one.
        app[CONFIG] = _with_bound_ports(config, rtmp_server)
        rtmp_addresses = ", ".join(
            _format_address(sock.getsockname()) for sock in rtmp_server.sockets
        )
        logger.info(
            "RealCast Box %s: RTMP ingest on %s, data directory %s",
            __version__,
            rtmp_addresses,
            data_path,
        )
        if rtmp_server.tls_sockets:
            logger.info(
                "RTMPS ingest on %s",
                ", ".join(
                    _format_address(sock.getsockname())
                    for sock in rtmp_server.tls_sockets
                ),
            )
        yield
        logger.info("stopping: closing publishers")
    logger.info("stopped")


def _with_bound_ports(config: Config, rtmp_server: RtmpServer) -> Config:
    """Return ``config`` with the RTMP and RTMPS ports that the sockets really use."""
    bound = {"rtmp_port": rtmp_server.sockets[0].getsockname()[1]}
    if rtmp_server.tls_sockets:
        bound["rtmps_port"] = rtmp_server.tls_sockets[0].getsockname()[1]
    if all(getattr(config, name) == port for name, port in bound.items()):
        return config
    return dataclasses.replace(config, **bound)


def dispatch_settings(config: Config) -> DispatchSettings:
    """Return the webhook dispatcher's settings; StartupError for a bad deny list."""
    try:
        deny_list = DenyList.parse(config.webhook_deny_list)
    except ValueError as exc:
        raise StartupError(f"invalid webhook_deny_list setting: {exc}") from None
    return DispatchSettings(
        timeout=config.webhook_timeout_seconds,
        retry=RetryPolicy(
            max_attempts=config.webhook_max_attempts,
            base_delay=config.webhook_retry_base_seconds,
        ),
        disable_after=config.webhook_disable_after_failures,
        deny_list=deny_list,
        retention_days=config.webhook_delivery_retention_days,
    )


async def _start_webhooks(
    app: web.Application,
    stack: contextlib.AsyncExitStack,
    database: Database,
    events: EventBus,
) -> None:
    """Start the dispatcher and subscribe the outbox to ``events``."""
    dispatcher = Dispatcher(
        database,
        dispatch_settings(app[CONFIG]),
        on_disabled=webhooks_api.disabled_hook(app),
    )
    await dispatcher.start()
    stack.push_async_callback(dispatcher.close)
    app[webhooks_api.DISPATCHER] = dispatcher
    outbox = Outbox(database, dispatcher.wake)
    stack.callback(events.subscribe(outbox.handle))


async def _start_recordings(
    app: web.Application,
    stack: contextlib.AsyncExitStack,
    database: Database,
    hub: Hub,
    events: EventBus,
) -> None:
    """Start the recording service: recovery, automatic recording, pruning."""
    config = app[CONFIG]
    try:
        recordings_api.parse_allow_list(config.recordings_pull_allow_list)
    except ValueError as exc:
        raise StartupError(
            f"invalid recordings_pull_allow_list setting: {exc}"
        ) from None
    recordings = RecordingService(
        database,
        hub,
        events,
        config.data_path / "recordings",
        min_free_bytes=config.recordings_min_free_mb * 1024 * 1024,
        retention_days=config.recordings_retention_days,
    )
    await recordings.start()
    stack.push_async_callback(recordings.close)
    app[RECORDINGS] = recordings


def _restrict_database_files(path: Path) -> None:
    """Make the database and its WAL files readable by the box's user alone.

    SQLite creates them with the process umask, often 0644, and they hold
    stream keys and webhook secrets in plain text.
    """
    for suffix in ("", "-wal", "-shm"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            os.chmod(candidate, 0o600)


async def _probe_encoders(app: web.Application) -> None:
    """Probe the H.264 encoders in a worker thread and cache the result on ``app``."""
    statuses = await probe_encoders_async()
    app[ENCODERS].statuses = statuses
    working = [status.name for status in statuses if status.available]
    logger.info("H.264 encoders that work here: %s", ", ".join(working) or "none")


def _format_address(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
