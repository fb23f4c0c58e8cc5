"""Settings: one declared table, loaded from TOML, environment and CLI flags.

Precedence, lowest first: the defaults below, the TOML file, ``REALCAST_*``
environment variables, command-line flags. Unknown keys and invalid values
raise ConfigError naming the key, so a typo never starts a box on defaults.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import idna
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
    Setting(
        "http_front_door",
        bool,
        True,
        "Serve GETs of /hls on http_port with the box's own small HTTP/1.1 front"
        " end, which costs less CPU per request than aiohttp; false leaves every"
        " request to aiohttp. HTTPS always uses aiohttp.",
    ),
    Setting("rtmp_port", int, 1935, "TCP port of the RTMP ingest server.", 0, 65535),
    Setting(
        "tls_cert_file",
        str,
        "",
        "PEM file with the TLS certificate (and any intermediate certificates);"
        " with tls_key_file it turns on RTMPS and HTTPS. `realcast-box cert`"
        " makes a self-signed one.",
    ),
    Setting(
        "tls_key_file",
        str,
        "",
        "PEM file with the unencrypted private key of tls_cert_file.",
    ),
    Setting(
        "rtmps_port",
        int,
        1936,
        "TCP port of the RTMPS ingest server, beside rtmp_port, when TLS is"
        " configured.",
        0,
        65535,
    ),
    Setting(
        "https_port",
        int,
        8443,
        "TCP port of the HTTPS server (API, UI, HLS), beside http_port, when TLS"
        " is configured.",
        0,
        65535,
    ),
    Setting(
        "public_host",
        str,
        "",
        "Host name put into rtmp_url, and into hls_url when public_url is empty;"
        " empty uses the host of the request.",
    ),
    Setting(
        "public_url",
        str,
        "",
        'Base URL at which clients reach the HTTP server, such as "https://live'
        '.example.com" behind a reverse proxy (scheme, host, optional port, no'
        " path). When set, hls_url, playback_url and recording URLs start with it;"
        " rtmp_url still uses public_host.",
    ),
    Setting(
        "trusted_proxies",
        str,
        "",
        "Comma-separated IP addresses and networks (CIDR) of reverse proxies"
        " whose X-Forwarded-For header gives the client address, such as"
        ' "127.0.0.1, 10.0.0.0/8"; empty trusts none.',
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
        "Number of segments listed in a live media playlist, or more where they"
        " last less than three target durations. With low-latency HLS, more"
        " than 6 lets players request playlist delta updates (_HLS_skip).",
        2,
        100,
    ),
    Setting(
        "hls_low_latency",
        bool,
        True,
        "Low-latency HLS: partial segments, preload hints and blocking playlist "
        "reload. Players without it play the same playlists as regular HLS.",
    ),
    Setting(
        "hls_part_duration",
        float,
        0.333,
        "Target duration in seconds of a low-latency HLS partial segment "
        "(PART-TARGET); parts are cut at video frames and never exceed it. A"
        " feed whose frames are about as long (3 fps or below) gets a longer"
        " target for the session.",
        0.1,
        2.0,
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
        "Seconds without any bytes from an RTMP client before it is disconnected;"
        " also the time an RTMPS client has for its TLS handshake.",
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
    http_front_door: bool
    rtmp_port: int
    tls_cert_file: str
    tls_key_file: str
    rtmps_port: int
    https_port: int
    public_host: str
    public_url: str
    trusted_proxies: str
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
    hls_low_latency: bool
    hls_part_duration: float
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

    @property
    def tls_enabled(self) -> bool:
        """Whether a certificate and key are set, which turns on RTMPS and HTTPS."""
        return bool(self.tls_cert_file and self.tls_key_file)


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
            " (1, yes and on also mean true; 0, no and off mean false)"
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

    _check_tls_settings(values)
    if values["hls_part_duration"] > values["hls_segment_duration"]:
        raise ConfigError(
            f"invalid value {values['hls_part_duration']!r} for hls_part_duration:"
            " a part cannot be longer than a segment; expected at most"
            f" hls_segment_duration ({values['hls_segment_duration']!r})"
        )
    values["public_url"] = normalize_public_url(values["public_url"])
    _check_metrics_token(values["metrics_token"])
    try:
        parse_trusted_proxies(values["trusted_proxies"])
    except ValueError as exc:
        raise ConfigError(f"invalid value for trusted_proxies: {exc}") from None
    return Config(**values)


def _check_metrics_token(token: str) -> None:
    """Reject a token that a client cannot send as it is, or that was pasted badly.

    HTTP drops spaces and tabs around a header value and forbids control
    characters other than a tab inside it. A tab inside is allowed by HTTP
    but is a paste error in a token. The message leaves the token out,
    because it is a secret.
    """
    has_control = any(ord(char) < 0x20 or ord(char) == 0x7F for char in token)
    if token != token.strip() or has_control:
        raise ConfigError(
            "invalid value for metrics_token: it starts or ends with spaces or"
            " contains control characters such as a tab or a newline; remove"
            " them, since a client sends the token without them"
        )


def _check_tls_settings(values: Mapping[str, Any]) -> None:
    """Reject a certificate without its key (or the reverse) and clashing ports.

    The files themselves are read and checked at start, by realcast_box.tls.
    """
    cert_file, key_file = values["tls_cert_file"], values["tls_key_file"]
    if bool(cert_file) != bool(key_file):
        set_key, empty_key = (
            ("tls_cert_file", "tls_key_file")
            if cert_file
            else ("tls_key_file", "tls_cert_file")
        )
        raise ConfigError(
            f"{set_key} is set but {empty_key} is empty: set both to turn on RTMPS and"
            " HTTPS (`realcast-box cert --host NAME` makes a pair), or neither"
        )
    if not cert_file:
        return
    for secure, plain in (("rtmps_port", "rtmp_port"), ("https_port", "http_port")):
        if values[secure] != 0 and values[secure] == values[plain]:
            raise ConfigError(
                f"invalid value {values[secure]} for {secure}: it is also the"
                f" {plain}; choose two ports"
            )


# A lower-case DNS name or IPv4 address (dot-separated labels that neither
# start nor end with a hyphen), or an IPv6 address in brackets.
PUBLIC_URL_HOST = re.compile(
    r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?"
    r"|\[[0-9a-f:.]+\]"
)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_public_url(value: str) -> str:
    """Check public_url and return it as scheme://host[:port], lowercased.

    An internationalized host is converted to its ASCII (xn--) form.

    Raises ConfigError unless the value is empty or an http or https URL
    with a host, an optional port and no path, query, fragment or user name.
    """
    if not value:
        return ""
    try:
        scheme, host, port = _split_public_url(value.strip())
    except ValueError as exc:
        raise ConfigError(
            f"invalid value {value!r} for public_url: {exc}; expected a base URL"
            ' such as "https://live.example.com" or "http://192.0.2.7:8080"'
        ) from None
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


def _split_public_url(value: str) -> tuple[str, str, int | None]:
    """Split a public_url into scheme, host and port, or raise ValueError."""
    parts = urlsplit(value)
    port = parts.port  # Raises ValueError for a port that is not 0 to 65535.
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("the scheme must be http or https")
    if "@" in parts.netloc:
        raise ValueError("a user name or password is not allowed")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a path, query or fragment is not allowed")
    if port == 0:
        raise ValueError("the port must be from 1 to 65535")
    host = parts.netloc.lower()
    if port is not None:
        host = host.rsplit(":", 1)[0]
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(
                f"the host is not a valid internationalized name ({exc}); write"
                " it in its ASCII form (xn--...)"
            ) from None
    if PUBLIC_URL_HOST.fullmatch(host) is None:
        raise ValueError("the host is missing or invalid")
    if host.startswith("["):
        ipaddress.IPv6Address(host[1:-1])
    return scheme, host, port


def parse_trusted_proxies(value: str) -> tuple[IpNetwork, ...]:
    """Parse the trusted_proxies setting into IP networks.

    A bare address becomes a network of that one address. Raises ValueError
    naming the entry that is neither an address nor a network in CIDR form.
    """
    networks = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address or a network such as 10.0.0.0/8"
            ) from None
    return tuple(networks)


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
