"""Checks behind ``realcast-box doctor``: encoders, ports and the data directory.

Each check returns a list of problems, empty when the box can use what it
checked. The command prints the results and exits 1 when any check found a
problem.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from realcast_box.config import Config
from realcast_box.media.encoders import EncoderStatus

# Free space the data directory needs, in MiB: room for the database and a
# few minutes of HLS segments of several streams. An estimate, not a measure.
DEFAULT_MIN_FREE_MB = 500


def check_encoders(statuses: Sequence[EncoderStatus]) -> list[str]:
    """Return a problem unless at least one H.264 encoder works."""
    if any(status.available for status in statuses):
        return []
    tried = ", ".join(status.name for status in statuses)
    return [f"no H.264 encoder works here (tried {tried})"]


def check_port(host: str, port: int, setting: str) -> list[str]:
    """Return a problem unless every address of ``host`` can bind TCP ``port``.

    Port 0 lets the system pick a free port, so it always passes. The sockets
    set SO_REUSEADDR as asyncio's servers do, so connections in TIME_WAIT
    from an earlier run do not count as the port being in use.
    """
    if port == 0:
        return []
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return [f"{setting}: cannot resolve host {host!r}: {exc.strerror or exc}"]
    for family, kind, protocol, _name, address in addresses:
        with socket.socket(family, kind, protocol) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
                sock.listen(1)
            except OSError as exc:
                return [
                    f"{setting}: cannot listen on {host}:{port}:"
                    f" {exc.strerror or exc}; stop the other program or choose"
                    " another port"
                ]
    return []


def check_data_dir(path: Path, min_free_mb: int) -> list[str]:
    """Return problems unless ``path`` can be created, written, and has free space."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix=".doctor-", dir=path)
        os.close(descriptor)
        os.unlink(name)
    except OSError as exc:
        return [f"data directory {path} is not writable: {exc.strerror or exc}"]
    free_mb = shutil.disk_usage(path).free // (1024 * 1024)
    if free_mb < min_free_mb:
        return [
            f"data directory {path} has {free_mb} MiB free, less than the"
            f" {min_free_mb} MiB required"
        ]
    return []


def run_checks(
    config: Config, statuses: Sequence[EncoderStatus], min_free_mb: int
) -> list[tuple[str, list[str]]]:
    """Run every check; return (what was checked, its problems) for each."""
    rtmp_problems = check_port(config.host, config.rtmp_port, "rtmp_port")
    if config.rtmp_port == config.http_port != 0:
        rtmp_problems.append(
            f"rtmp_port: {config.rtmp_port} is also the http_port; choose two ports"
        )
    return [
        ("H.264 encoders", check_encoders(statuses)),
        (
            f"HTTP port {config.host}:{config.http_port}",
            check_port(config.host, config.http_port, "http_port"),
        ),
        (f"RTMP port {config.host}:{config.rtmp_port}", rtmp_problems),
        (
            f"data directory {config.data_path}",
            check_data_dir(config.data_path, min_free_mb),
        ),
    ]
