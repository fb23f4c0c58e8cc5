"""Command-line interface: ``realcast-box serve``, ``doctor`` and ``--version``."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click
from aiohttp import web

from realcast_box import __version__, doctor, ops_cli
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
    try:
        with _lock_data_dir(config.data_path):
            asyncio.run(_serve(config))
    except (StartupError, StoreError) as exc:
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
    problems = []
    for result in doctor.run_checks(config, statuses, min_free_mb):
        click.echo(f"{result.status:<4}  {result.label}")
        for warning in result.warnings:
            click.echo(f"      warning: {warning}")
        problems.extend(result.problems)
    if problems:
        raise click.ClickException("; ".join(problems))
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


async def _serve(config: Config) -> None:
    from realcast_box.app import create_app

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
        site = web.TCPSite(runner, config.host, config.http_port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for HTTP on {config.host}:{config.http_port} "
                f"(http_port): {exc.strerror or exc}; stop the other program or "
                "choose another port with --http-port"
            ) from None
        for address in runner.addresses:
            logger.info("HTTP API and HLS on http://%s:%s", *_host_port(address))
        logger.info("RealCast Box %s started", __version__)
        await stop.wait()
        logger.info("received stop signal")
    finally:
        await runner.cleanup()


def _host_port(address: tuple) -> tuple[str, int]:
    host, port = address[0], address[1]
    return (f"[{host}]" if ":" in host else host), port
