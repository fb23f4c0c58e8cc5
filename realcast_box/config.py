"""Settings: one declared table, loaded from TOML, environment and CLI flags.

Precedence, lowest first: the defaults below, the TOML file, ``REALCAST_*``
environment variables, command-line flags. Unknown keys and invalid values
raise ConfigError naming the key, so a typo never starts a box on defaults.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from realcast_box.errors import ConfigError

ENV_PREFIX = "REALCAST_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Link-local networks and cloud metadata services: AWS's IPv6 endpoint,
# Alibaba's address and Google's host name. The other clouds serve metadata
# at 169.254.169.254, inside 169.254.0.0/16.
DEFAULT_WEBHOOK_DENY_LIST = (
    "169.254.0.0/16, fe80::/10, fd00:ec2::254, 100.100.100.200,"
    " metadata.google.internal"
)


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "0.0.0.0", "Address the HTTP and RTMP servers listen on."),
    Setting(
        "http_port", int, 8080, "TCP port of the HTTP server (API, HLS).", 0, 65535
    ),
    Setting("rtmp_port", int, 1935, "TCP port of the RTMP ingest server.", 0, 65535),
    Setting(
        "public_host",
        str,
        "",
        "Host name put into rtmp_url and hls_url; empty uses the host of the request.",
    ),
    Setting(
        "data_dir",
        str,
        "",
        "Directory for the database, secrets and media; empty uses the user data dir.",
    ),
    Setting("log_level", str, "info", "Log level.", choices=LOG_LEVELS),
    Setting(
        "token_expiry_minutes",
        int,
        1440,
        "Lifetime of user access tokens, in minutes.",
        1,
        525600,
    ),
    Setting(
        "audit_retention_days",
        int,
        90,
        "Days that audit log entries are kept; older ones are deleted daily.",
        1,
        36500,
    ),
    Setting(
        "rate_limit_per_minute",
        int,
        60,
        "API requests allowed per identity (user, API key or client address) "
        "per minute.",
        1,
        1_000_000,
    ),
    Setting(
        "rate_limit_per_hour",
        int,
        1000,
        "API requests allowed per identity per hour.",
        1,
        10_000_000,
    ),
    Setting(
        "stream_rate_limit_per_minute",
        int,
        10,
        "Stream operations (create, update, delete, reset-key, playback tokens) "
        "allowed per identity per minute.",
        1,
        1_000_000,
    ),
    Setting(
        "stream_rate_limit_per_hour",
        int,
        100,
        "Stream operations allowed per identity per hour.",
        1,
        10_000_000,
    ),
    Setting(
        "login_rate_limit_per_minute",
        int,
        10,
        "Login attempts allowed per email address, and per client address, per minute.",
        1,
        1_000_000,
    ),
    Setting(
        "hls_segment_duration",
        float,
        2.0,
        "Target HLS segment duration in seconds; segments are cut at keyframes.",
        0.5,
        30.0,
    ),
    Setting(
        "hls_window",
        int,
        6,
        "Number of segments listed in a live media playlist.",
        2,
        100,
    ),
    Setting(
        "hls_cors_origins",
        str,
        "*",
        'Origins allowed to fetch /hls from browser scripts (CORS): "*" for any,'
        ' or a comma-separated list such as "https://a.example,https://b.example".',
    ),
    Setting(
        "hls_viewer_window",
        float,
        15.0,
        "Seconds a playback session counts as a viewer after its last media "
        "playlist or segment fetch.",
        1.0,
        3600.0,
    ),
    Setting(
        "hls_max_viewer_sessions",
        int,
        100_000,
        "Most playback sessions tracked at once; beyond it the least recently "
        "active one is dropped.",
        10,
        10_000_000,
    ),
    Setting(
        "playback_session_seconds",
        int,
        60,
        "Lifetime in seconds of the session signature written into playlist URIs "
        "of signed streams; every playlist reload renews it.",
        1,
        86400,
    ),
    Setting(
        "playback_clock_leeway",
        float,
        30.0,
        "Seconds of clock skew allowed when checking playback token expiry.",
        0.0,
        600.0,
    ),
    Setting(
        "rtmp_read_timeout",
        float,
        10.0,
        "Seconds without any bytes from an RTMP client before it is disconnected.",
        1.0,
        600.0,
    ),
    Setting(
        "rtmp_takeover_after",
        float,
        5.0,
        "Seconds without media after which a new publisher may take over a key.",
        0.5,
        600.0,
    ),
    Setting(
        "rtmp_max_connections",
        int,
        256,
        "Most RTMP connections open at once; more are closed on accept.",
        1,
        100000,
    ),
    Setting(
        "rtmp_max_message_size",
        int,
        8 * 1024 * 1024,
        "Largest RTMP message accepted, in bytes; larger ones close the connection.",
        1024,
        256 * 1024 * 1024,
    ),
    Setting(
        "reconnect_window_seconds",
        float,
        30.0,
        "Seconds a stream stays 'reconnecting' after its publisher drops, so that "
        "a publisher coming back with the same key continues the session; 0 ends "
        "the session at once.",
        0.0,
        1800.0,
    ),
    Setting(
        "webhook_timeout_seconds",
        float,
        10.0,
        "Seconds a webhook receiver has to answer an attempt before it counts as"
        " failed.",
        0.1,
        300.0,
    ),
    Setting(
        "webhook_max_attempts",
        int,
        8,
        "Attempts per webhook delivery, the first included, before it is marked"
        " failed.",
        1,
        100,
    ),
    Setting(
        "webhook_retry_base_seconds",
        float,
        80.0,
        "Seconds before the first retry of a failed webhook delivery; each later"
        " retry waits 3 times longer, +-20% at random (8 attempts span about a"
        " day).",
        0.01,
        86400.0,
    ),
    Setting(
        "webhook_disable_after_failures",
        int,
        5,
        "Deliveries in a row that fail after their last attempt before a webhook"
        " is disabled; 0 never disables.",
        0,
        100000,
    ),
    Setting(
        "webhook_deny_list",
        str,
        DEFAULT_WEBHOOK_DENY_LIST,
        "Comma-separated IP networks, addresses and host names that webhook URLs"
        " may not reach (link-local and cloud metadata by default; loopback and"
        " LAN addresses are allowed).",
    ),
    Setting(
        "webhook_delivery_retention_days",
        int,
        30,
        "Days that finished webhook deliveries stay in the delivery log.",
        1,
        36500,
    ),
    Setting(
        "recordings_min_free_mb",
        int,
        1024,
        "Free disk space, in MiB, below which active recordings stop as failed"
        " with reason disk_full.",
        0,
        1 << 30,
    ),
    Setting(
        "recordings_retention_days",
        int,
        0,
        "Days that finished recordings are kept before they and their files are"
        " deleted; 0 keeps them all.",
        0,
        36500,
    ),
    Setting(
        "recordings_pull_allow_list",
        str,
        "",
        "Comma-separated host names and IP addresses from which POST"
        " /api/recordings/start may pull an external stream_url; empty allows none.",
    ),
    Setting(
        "chat_send_queue_size",
        int,
        100,
        "Chat frames queued per WebSocket client; a client that falls this far"
        " behind is disconnected.",
        2,
        100_000,
    ),
    Setting(
        "chat_rate_limit_messages",
        int,
        5,
        "Chat messages a sender may post per chat_rate_limit_seconds.",
        1,
        100_000,
    ),
    Setting(
        "chat_rate_limit_seconds",
        float,
        10.0,
        "Length of the chat rate-limit window, in seconds.",
        0.1,
        3600.0,
    ),
    Setting(
        "chat_history_on_join",
        int,
        50,
        "Recent chat messages sent to a client when it joins.",
        0,
        100,
    ),
    Setting(
        "chat_heartbeat_seconds",
        float,
        30.0,
        "Seconds between WebSocket pings to chat clients; a client that does"
        " not answer within half of it is disconnected.",
        1.0,
        3600.0,
    ),
    Setting(
        "chat_join_timeout_seconds",
        float,
        10.0,
        "Seconds a chat client has to send its join frame after connecting.",
        0.1,
        600.0,
    ),
    Setting(
        "metrics_enabled",
        bool,
        True,
        "Serve Prometheus metrics at /metrics. With false, /metrics returns 404.",
    ),
    Setting(
        "metrics_token",
        str,
        "",
        "Bearer token that /metrics requires (Authorization: Bearer TOKEN)."
        " Empty serves /metrics without authentication.",
    ),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Config:
    host: str
    http_port: int
    rtmp_port: int
    public_host: str
    data_dir: str
    log_level: str
    token_expiry_minutes: int
    audit_retention_days: int
    rate_limit_per_minute: int
    rate_limit_per_hour: int
    stream_rate_limit_per_minute: int
    stream_rate_limit_per_hour: int
    login_rate_limit_per_minute: int
    hls_segment_duration: float
    hls_window: int
    hls_cors_origins: str
    hls_viewer_window: float
    hls_max_viewer_sessions: int
    playback_session_seconds: int
    playback_clock_leeway: float
    rtmp_read_timeout: float
    rtmp_takeover_after: float
    rtmp_max_connections: int
    rtmp_max_message_size: int
    reconnect_window_seconds: float
    webhook_timeout_seconds: float
    webhook_max_attempts: int
    webhook_retry_base_seconds: float
    webhook_disable_after_failures: int
    webhook_deny_list: str
    webhook_delivery_retention_days: int
    recordings_min_free_mb: int
    recordings_retention_days: int
    recordings_pull_allow_list: str
    chat_send_queue_size: int
    chat_rate_limit_messages: int
    chat_rate_limit_seconds: float
    chat_history_on_join: int
    chat_heartbeat_seconds: float
    chat_join_timeout_seconds: float
    metrics_enabled: bool
    metrics_token: str

    @property
    def data_path(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        return Path(platformdirs.user_data_dir("realcast-box", appauthor=False))


def _check_toml_type(setting: Setting, value: Any, source: str) -> None:
    """Reject TOML values of the wrong type, such as a quoted port number."""
    if setting.type is float:
        valid = isinstance(value, int | float) and not isinstance(value, bool)
    elif setting.type is int:
        valid = isinstance(value, int) and not isinstance(value, bool)
    else:
        valid = isinstance(value, setting.type)
    if not valid:
        raise ConfigError(
            f"invalid value {value!r} for {setting.name} (from {source}): "
            f"expected a TOML {setting.type.__name__}"
        )


def _convert(setting: Setting, value: Any, source: str) -> Any:
    where = f"{setting.name} (from {source})"
    if setting.type is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(
            f"invalid value {value!r} for {where}: expected true or false"
        )
    if setting.type is int:
        if isinstance(value, bool) or isinstance(value, float):
            raise ConfigError(
                f"invalid value {value!r} for {where}: expected an integer"
            )
        try:
            converted: Any = int(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"invalid value {value!r} for {where}: expected an integer"
            ) from None
    elif setting.type is float:
        if isinstance(value, bool):
            raise ConfigError(f"invalid value {value!r} for {where}: expected a number")
        try:
            converted = float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"invalid value {value!r} for {where}: expected a number"
            ) from None
    else:
        if not isinstance(value, str):
            raise ConfigError(f"invalid value {value!r} for {where}: expected a string")
        converted = value

    if setting.choices is not None:
        converted = converted.lower()
        if converted not in setting.choices:
            allowed = ", ".join(setting.choices)
            raise ConfigError(
                f"invalid value {value!r} for {where}: expected one of {allowed}"
            )
    if setting.minimum is not None and converted < setting.minimum:
        raise ConfigError(
            f"invalid value {value!r} for {where}: minimum is {setting.minimum:g}"
        )
    if setting.maximum is not None and converted > setting.maximum:
        raise ConfigError(
            f"invalid value {value!r} for {where}: maximum is {setting.maximum:g}"
        )
    return converted


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in config file {path}: {exc}") from None


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config from defaults, a TOML file, the environment and overrides.

    ``overrides`` contains command-line values; None entries are ignored.
    Raises ConfigError naming the key for unknown keys and invalid values.
    """
    values = {setting.name: setting.default for setting in SETTINGS}

    if path is not None:
        for key, value in _read_toml(Path(path)).items():
            setting = SETTINGS_BY_NAME.get(key)
            if setting is None:
                raise ConfigError(f"unknown key {key!r} in config file {path}")
            _check_toml_type(setting, value, str(path))
            values[key] = _convert(setting, value, str(path))

    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key == "config":
            continue
        setting = SETTINGS_BY_NAME.get(key)
        if setting is None:
            raise ConfigError(f"unknown environment variable {name}")
        values[key] = _convert(setting, value, f"environment variable {name}")

    for key, value in (overrides or {}).items():
        if value is None:
            continue
        setting = SETTINGS_BY_NAME.get(key)
        if setting is None:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _convert(setting, value, "command line")

    return Config(**values)


def render_default_toml() -> str:
    """Render the documented TOML file whose values equal the defaults."""
    lines = [
        "# RealCast Box configuration. Every key is listed with its default value.",
        "# Each key can also be set with a REALCAST_<KEY> environment variable",
        "# (REALCAST_HTTP_PORT=9000) or a command-line flag; flags win over the",
        "# environment, which wins over this file.",
    ]
    for setting in SETTINGS:
        lines.append("")
        lines.append(f"# {setting.help}")
        value = setting.default
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, str):
            rendered = f'"{value}"'
        else:
            rendered = repr(value)
        lines.append(f"{setting.name} = {rendered}")
    return "\n".join(lines) + "\n"
