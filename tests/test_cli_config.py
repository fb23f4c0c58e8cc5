"""The ``realcast-box config`` command, through click's test runner."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from realcast_box.cli import main
from realcast_box.config import load_config

REPO = Path(__file__).resolve().parent.parent


def test_cli_config_prints_shipped_file():
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0, result.output
    assert result.output == (REPO / "realcast.toml").read_text()


def test_cli_config_output_loads_as_defaults(tmp_path):
    result = CliRunner().invoke(main, ["config"])
    path = tmp_path / "realcast.toml"
    path.write_text(result.output)
    assert load_config(path, environ={}) == load_config(None, environ={})


def test_cli_config_listed_in_help():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "config" in result.output
    assert "Print the default realcast.toml" in result.output
