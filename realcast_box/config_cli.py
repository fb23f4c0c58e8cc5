"""The ``config`` command: print the default configuration file."""

from __future__ import annotations

import click

from realcast_box.config import render_default_toml


@click.command("config")
def config_command() -> None:
    """Print the default realcast.toml: every setting, its help and default.

    Save the output, edit it, and pass it to ``serve --config FILE``.
    """
    click.echo(render_default_toml(), nl=False)


def register(group: click.Group) -> None:
    """Add the ``config`` command to ``group``."""
    group.add_command(config_command)
