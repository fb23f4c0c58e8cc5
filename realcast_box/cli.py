"""Command-line interface: serve, doctor, cert and --version."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

import click
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from realcast_box import __version__, config_cli, doctor, ops_cli, tls
from realcast_box.config import Config, load_config
from realcast_box.datalock import DataDirLock, DataDirLocked
from realcast_box.errors import ConfigError, StartupError
from realcast_box.media.encoders import format_table, probe_encoders
from realcast_box.store.db import StoreError

logger = logging.getLogger("realcast_box")

# Seconds that open HTTP connections get to finish once shutdown starts.
HTTP_SHUTDOWN_TIMEOUT = 2.0

SETTING_FLAGS = ("data_dir", "host", "http_port", "rtmp_port")
DATA_DIR_HELP = "Directory for the database, secrets and media."
HTTP_PORT_HELP = "TCP port of the HTTP server."
RTMP_PORT_HELP = "TCP port of the RTMP ingest server."


@click.group()
@click.version_option(__version__, prog_name="realcast-box")
def main() -> None:
    """RealCast Box: a self-hosted live-streaming appliance."""


ops_cli.register(main)
config_cli.register(main)


def settings_options(command: Callable) -> Callable:
    """Add the flags that ``serve`` and ``doctor`` share to ``command``.

    The flags arrive as ``config_path`` and a ``settings`` dict of overrides
    for load_config (None for a flag that was not given).
    """
    flags = [
        click.option("--rtmp-port", "rtmp_port", type=int, help=RTMP_PORT_HELP),
        click.option("--http-port", "http_port", type=int, help=HTTP_PORT_HELP),
        click.option("--host", "host", help="Address to listen on (HTTP and RTMP)."),
        click.option("--data-dir", "data_dir", help=DATA_DIR_HELP),
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False),
            envvar="REALCAST_CONFIG",
            help="TOML settings file (see realcast.toml for every key).",
        ),
    ]

    @functools.wraps(command)
    def wrapper(config_path: str | None, **options: object) -> object:
        settings = {name: options.pop(name) for name in SETTING_FLAGS}
        return command(config_path, settings, **options)

    for flag in flags:
        wrapper = flag(wrapper)
    return wrapper


def load_settings(config_path: str | None, settings: dict) -> Config:
    """Load the config for a command; a ConfigError becomes a CLI error."""
    try:
        return load_config(config_path, overrides=settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


# Maximum length, in characters, of the reason logged for a malformed request.
MAX_LOGGED_REASON = 200


class MalformedRequestFilter(logging.Filter):
    """Filter that turns aiohttp's report of a malformed request into a warning.

    aiohttp logs each request it cannot parse (a bad header, a line too
    long) at ERROR, with a traceback. The client gets a 400 and the box is
    fine, so the log gets one WARNING line with the reason instead. Other
    records, such as a handler's exception, pass unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.WARNING):
            return False
        # The reason quotes the client's bytes: one line, and not too long.
        reason = " ".join(str(exc.message).split())[:MAX_LOGGED_REASON]
        record.msg = f"{record.getMessage()}: {reason} (status {exc.code})"
        record.args = ()
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        record.exc_info = None
        record.exc_text = None
        return True


@main.command()
@settings_options
@click.option(
    "--log-level",
    help="Log level: debug, info, warning, error or critical.",
)
def serve(config_path: str | None, settings: dict, log_level: str | None) -> None:
    """Run the box: HTTP API and HLS, and RTMP ingest, until SIGINT or SIGTERM."""
    config = load_settings(config_path, {**settings, "log_level": log_level})

    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiosqlite logs every statement with its parameters at DEBUG, which
    # would put stream keys and password hashes in the log.
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    try:
        with _lock_data_dir(config.data_path):
            asyncio.run(_serve(config))
    except (StartupError, ConfigError, StoreError) as exc:
        raise click.ClickException(f"failed to start: {exc}") from None


@main.command("doctor")
@settings_options
@click.option(
    "--min-free-mb",
    type=click.IntRange(min=0),
    default=doctor.DEFAULT_MIN_FREE_MB,
    show_default=True,
    help="Free space the data directory needs, in MiB.",
)
def doctor_command(config_path: str | None, settings: dict, min_free_mb: int) -> None:
    """Check that the box can run here: encoders, FFmpeg, ports, data, clock.

    Prints the H.264 encoder table and one line per check. Warnings do not
    change the exit status. Exits 0 when the box can run, else 1 with the
    problems found.
    """
    config = load_settings(config_path, settings)
    statuses = probe_encoders()
    click.echo(format_table(statuses))
    click.echo()
    failed = 0
    for result in doctor.run_checks(config, statuses, min_free_mb):
        click.echo(f"{result.status:<4}  {result.label}")
        # Each reason under its own line, so the fix sits next to the check.
        for problem in result.problems:
            click.echo(f"      problem: {problem}")
        for warning in result.warnings:
            click.echo(f"      warning: {warning}")
        failed += bool(result.problems)
    if failed:
        raise click.ClickException(
            f"{failed} check(s) failed; the problems are listed under each FAIL line"
        )
    click.echo("\nThe box can run here.")


def _lock_data_dir(data_path: Path) -> DataDirLock:
    """Create the data directory and take its lock; StartupError when either fails.

    The lock keeps a second box, and ``restore``, off a data directory that
    this box uses.
    """
    try:
        # The data directory contains stream keys, webhook secrets and
        # password hashes, so a new one is readable by the box's user alone.
        data_path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return DataDirLock(data_path).acquire()
    except DataDirLocked as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(
            f"cannot use data directory {data_path}: {exc.strerror or exc}"
        ) from None


@main.command("cert")
@click.option(
    "--host",
    "hosts",
    required=True,
    multiple=True,
    help="DNS name or IP address that clients use to reach the box; repeat it "
    "for more (--host box.local --host 192.168.1.10).",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Directory for {tls.CERT_FILE_NAME} and {tls.KEY_FILE_NAME}. Default: "
    "the data directory, where `realcast-box backup` includes them.",
)
@click.option("--data-dir", "data_dir", help=DATA_DIR_HELP)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="REALCAST_CONFIG",
    help="TOML settings file; its data_dir is the default --out-dir.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=825,
    show_default=True,
    help="Days the certificate is valid. Apple devices reject server "
    "certificates valid for more than 825 days.",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def cert_command(
    hosts: tuple[str, ...],
    out_dir: Path | None,
    data_dir: str | None,
    config_path: str | None,
    days: int,
    force: bool,
) -> None:
    """Make a self-signed TLS certificate and key for RTMPS and HTTPS on a LAN.

    Prints the certificate's SHA-256 fingerprint, to compare with what a
    browser or OBS shows on first connect, and the settings that turn TLS on.
    """
    if out_dir is None:
        out_dir = load_settings(config_path, {"data_dir": data_dir}).data_path
        try:
            # A new data directory is private, as serve would make it.
            out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise click.ClickException(
                f"cannot create data directory {out_dir}: {exc.strerror or exc}; "
                "pass --out-dir or --data-dir"
            ) from None
    try:
        pair = tls.make_self_signed(list(hosts), days)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from None
    try:
        cert_path, key_path = tls.write_pair(pair, out_dir, force=force)
    except FileExistsError as exc:
        raise click.ClickException(
            f"{exc.args[0]} already exists; pass --force to overwrite it or "
            "choose another --out-dir"
        ) from None
    except OSError as exc:
        raise click.ClickException(
            f"failed to write into {out_dir}: {exc.strerror or exc}"
        ) from None
    click.echo(f"Certificate: {cert_path}")
    click.echo(f"Private key: {key_path} (mode 0600)")
    click.echo(f"Hosts: {', '.join(hosts)}")
    click.echo(f"Valid until: {pair.not_valid_after:%Y-%m-%d %H:%M} UTC")
    click.echo(f"SHA-256 fingerprint: {pair.fingerprint}")
    click.echo()
    click.echo(
        "Add these lines to the TOML file that serve reads (--config FILE), or "
        "set them as REALCAST_TLS_CERT_FILE and REALCAST_TLS_KEY_FILE:"
    )
    click.echo(f"tls_cert_file = {json.dumps(str(cert_path))}")
    click.echo(f"tls_key_file = {json.dumps(str(key_path))}")


async def _serve(config: Config) -> None:
    from realcast_box.app import TLS_CONTEXT, create_app
    from realcast_box.hls.front import FrontSite

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    runner = web.AppRunner(
        create_app(config),
        handle_signals=False,
        shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
        access_log=None,
    )
    await runner.setup()
    try:
        site: web.BaseSite
        if config.http_front_door:
            site = FrontSite(
                runner,
                config.host,
                config.http_port,
                shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
            )
        else:
            site = web.TCPSite(runner, config.host, config.http_port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for HTTP on {config.host}:{config.http_port} "
                f"(http_port): {exc.strerror or exc}; stop the other program or "
                "choose another port with --http-port"
            ) from None
        served_by = (
            "the HLS front door, then aiohttp" if config.http_front_door else "aiohttp"
        )
        for address in runner.addresses:
            logger.info(
                "HTTP API and HLS on http://%s:%s (served by %s)",
                *_host_port(address),
                served_by,
            )
        ssl_context = runner.app[TLS_CONTEXT]
        if ssl_context is not None:
            await _start_https(runner, config, ssl_context)
        logger.info("RealCast Box %s started", __version__)
        await stop.wait()
        logger.info("received stop signal")
    finally:
        await runner.cleanup()


async def _start_https(
    runner: web.AppRunner, config: Config, ssl_context: ssl.SSLContext
) -> None:
    """Serve the same application over HTTPS on https_port, beside HTTP."""
    plain_addresses = set(runner.addresses)
    site = web.TCPSite(runner, config.host, config.https_port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen for HTTPS on {config.host}:{config.https_port} "
            f"(https_port): {exc.strerror or exc}; stop the other program or "
            "choose another port with the https_port setting"
        ) from None
    for address in runner.addresses:
        if address not in plain_addresses:
            logger.info("HTTPS API and HLS on https://%s:%s", *_host_port(address))


def _host_port(address: tuple) -> tuple[str, int]:
    host, port = address[0], address[1]
    return (f"[{host}]" if ":" in host else host), port
