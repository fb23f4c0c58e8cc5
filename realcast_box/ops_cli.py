"""Operator commands: ``user create``, ``backup`` and ``restore``.

They work on a data directory directly, not through the API. ``user create``
and ``backup`` also work while a box runs on that directory: SQLite in WAL
mode lets a second connection read and write, and the backup API copies a
consistent snapshot. ``restore`` fails while a box holds the data
directory lock.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import click

from realcast_box.backup import BackupError, create_backup
from realcast_box.config import Config, load_config
from realcast_box.errors import ConfigError
from realcast_box.restore import restore_backup

DATA_DIR_HELP = "Directory for the database, secrets and media."
CONFIG_HELP = "TOML settings file (see realcast.toml for every key)."


def data_dir_options(command: Callable) -> Callable:
    """Add --config and --data-dir; the command gets the loaded Config as ``config``."""

    @click.option("--data-dir", "data_dir", help=DATA_DIR_HELP)
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar="REALCAST_CONFIG",
        help=CONFIG_HELP,
    )
    @functools.wraps(command)
    def wrapper(config_path: str | None, data_dir: str | None, **options: object):
        try:
            config = load_config(config_path, overrides={"data_dir": data_dir})
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        return command(config=config, **options)

    return wrapper


@click.group("user")
def user_group() -> None:
    """Manage user accounts without the API."""


@user_group.command("create")
@data_dir_options
@click.option("--email", required=True, help="Email address the user logs in with.")
@click.option("--full-name", default="", help="Display name of the user.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input instead of a prompt.",
)
def user_create(config: Config, email: str, full_name: str, password_stdin: bool):
    """Create a user, with the checks and password hashing of the register API.

    Without --password-stdin the password is read twice from a hidden prompt.
    Works while the box runs and while it is stopped.
    """
    from realcast_box import users_admin

    if password_stdin:
        password = users_admin.read_password_stdin(sys.stdin)
    else:
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, err=True
        )
    try:
        user = asyncio.run(
            users_admin.create_user(config.data_path, email, password, full_name)
        )
    except users_admin.UserCreateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created user {user['id']} ({user['email']})")


@click.command("backup")
@data_dir_options
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Backup file to write (a .tar.gz archive, mode 0600).",
)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def backup_command(config: Config, out: Path, force: bool) -> None:
    """Back up the database and secrets; safe while the box runs.

    Live HLS segments and recordings are not included.
    """
    try:
        manifest = create_backup(config.data_path, out, force=force)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    rows = sum(manifest["tables"].values())
    files = ", ".join(entry["name"] for entry in manifest["files"])
    click.echo(
        f"wrote {out}: schema version {manifest['schema_version']},"
        f" {rows} rows in {len(manifest['tables'])} tables, files {files}"
    )


@click.command("restore")
@click.argument(
    "backup_file", type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@data_dir_options
@click.option(
    "--force",
    is_flag=True,
    help="Restore into a data directory that is not empty; the files replaced"
    " are moved into a pre-restore folder there.",
)
def restore_command(config: Config, backup_file: Path, force: bool) -> None:
    """Restore BACKUP_FILE into the data directory of a stopped box."""
    data_path = config.data_path
    try:
        result = restore_backup(backup_file, data_path, force=force)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"restore into {data_path} failed: {exc.strerror or exc}"
        ) from None
    manifest = result.manifest
    click.echo(
        f"restored the backup of {manifest['created_at']} (schema version"
        f" {manifest['schema_version']}) into {data_path}"
    )
    if result.moved_to is not None:
        click.echo(f"moved the files it replaced to {result.moved_to}")


def register(group: click.Group) -> None:
    """Add the commands of this module to the ``realcast-box`` group."""
    group.add_command(user_group)
    group.add_command(backup_command)
    group.add_command(restore_command)
