"""Packaging: the example configs, the frozen build's UI lookup, the licence list.

The built binary itself is tested by packaging/smoke_test.py through
``./build.sh test``, because building it takes minutes.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from realcast_box import ui
from realcast_box.config import SETTINGS_BY_NAME, load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIGS = sorted((REPO / "config").glob("*.toml"))


def test_packaging_example_configs_found():
    names = {path.name for path in EXAMPLE_CONFIGS}
    assert {"lan.toml", "tls.toml", "behind-proxy.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda path: path.name)
def test_packaging_example_config_loads(path):
    with path.open("rb") as file:
        values = tomllib.load(file)
    unknown = sorted(set(values) - set(SETTINGS_BY_NAME))
    assert not unknown, f"{path.name} has keys config.py does not declare: {unknown}"
    config = load_config(path, environ={})

    for key, value in values.items():
        assert getattr(config, key) == value, key


def test_packaging_lan_config_is_default_network():
    config = load_config(REPO / "config" / "lan.toml", environ={})
    defaults = load_config(None, environ={})
    assert config.host == defaults.host
    assert config.http_port == defaults.http_port
    assert config.rtmp_port == defaults.rtmp_port
    assert config.data_path == Path("/var/lib/realcast-box")


def test_packaging_frozen_ui_dir(tmp_path, monkeypatch):
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "index.html").write_text("<!doctype html>")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert ui.bundle_dir() == tmp_path
    assert ui.find_ui_dir() == tmp_path / "ui"


def test_packaging_frozen_ui_dir_missing(tmp_path, monkeypatch):
    # A frozen build without ui/ must not fall back to folders of the build
    # machine, which a copied binary would not have.
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert ui.default_ui_dirs() == (tmp_path / "ui",)
    assert ui.find_ui_dir() is None


def test_packaging_source_ui_dir():
    assert ui.bundle_dir() is None
    assert ui.find_ui_dir() == REPO / "ui"
