"""Settings: defaults, TOML, environment, overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from realcast_box.config import SETTINGS, load_config, render_default_toml
from realcast_box.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_config_shipped_toml_equals_defaults():
    shipped = load_config(REPO / "realcast.toml", environ={})
    defaults = load_config(None, environ={})
    assert shipped == defaults


def test_config_shipped_toml_documents_every_key():
    text = (REPO / "realcast.toml").read_text()
    assert text == render_default_toml()
    for setting in SETTINGS:
        assert f"\n{setting.name} = " in text


def test_config_defaults_match_issue():
    config = load_config(None, environ={})
    assert config.http_port == 8080
    assert config.rtmp_port == 1935
    assert config.hls_segment_duration == 2.0
    assert config.hls_window == 6


def test_config_precedence_file_env_override(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text("http_port = 9000\nrtmp_port = 1940\nhls_window = 8\n")
    config = load_config(
        path,
        environ={"REALCAST_RTMP_PORT": "1941", "REALCAST_HLS_WINDOW": "9"},
        overrides={"hls_window": 10, "host": None},
    )
    assert config.http_port == 9000
    assert config.rtmp_port == 1941
    assert config.hls_window == 10
    assert config.host == "0.0.0.0"


def test_config_unknown_file_key_names_key(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text("htp_port = 9000\n")
    with pytest.raises(ConfigError, match="htp_port"):
        load_config(path, environ={})


def test_config_unknown_env_var_names_it():
    with pytest.raises(ConfigError, match="REALCAST_RTMP_PROT"):
        load_config(None, environ={"REALCAST_RTMP_PROT": "1"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("http_port", "eighty", "expected an integer"),
        ("http_port", "70000", "maximum is 65535"),
        ("hls_segment_duration", "0.1", "minimum is 0.5"),
        ("log_level", "loud", "expected one of"),
    ],
)
def test_config_invalid_env_value_names_key(key, value, message):
    environ = {f"REALCAST_{key.upper()}": value}
    with pytest.raises(ConfigError, match=message) as excinfo:
        load_config(None, environ=environ)
    assert key in str(excinfo.value)


def test_config_wrong_toml_type_names_key(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text('http_port = "80"\n')
    with pytest.raises(ConfigError, match="http_port"):
        load_config(path, environ={})


def test_config_invalid_toml_syntax(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text("http_port = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path, environ={})


def test_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", environ={})


def test_config_data_path_defaults_to_platformdirs():
    config = load_config(None, environ={})
    assert "realcast-box" in str(config.data_path)


def test_config_part_longer_than_segment_rejected():
    with pytest.raises(ConfigError, match="hls_part_duration") as excinfo:
        load_config(
            None,
            environ={},
            overrides={"hls_segment_duration": 0.5, "hls_part_duration": 1.0},
        )

    assert "at most hls_segment_duration (0.5)" in str(excinfo.value)
