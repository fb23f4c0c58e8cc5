"""Checks behind ``realcast-box doctor``: encoders, FFmpeg, ports, data, clock.

Each check returns a list of problems, empty when the box can use what it
checked. Some checks also return warnings, which are printed but do not
fail the command. The command prints the results and exits 1 when any
check found a problem.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import av

from realcast_box import tls
from realcast_box.config import Config
from realcast_box.datalock import is_locked, read_owner
from realcast_box.errors import ConfigError
from realcast_box.media.encoders import EncoderStatus

# Free space the data directory needs, in MiB: room for the database and a
# few minutes of HLS segments of several streams. An estimate, not a measure.
DEFAULT_MIN_FREE_MB = 500

# FFmpeg parts the box uses besides the H.264 encoders: it decodes H.264 and
# AAC from RTMP to transcode, encodes AAC and MJPEG (recording thumbnails),
# and writes MP4 recordings.
REQUIRED_DECODERS = ("h264", "aac")
REQUIRED_ENCODERS = ("aac", "mjpeg")
REQUIRED_FORMATS = ("mp4",)

# A wall clock before this year is unset (a board without a battery-backed
# clock starts in 1970 or at its build date). Access tokens, TLS
# certificates and webhook signatures all compare times with other hosts.
MIN_PLAUSIBLE_YEAR = 2025
MAX_PLAUSIBLE_YEAR = 2100
# Wall-clock and monotonic time may drift apart by this much during the
# clock check before it warns that the clock was stepped.
MAX_CLOCK_STEP_SECONDS = 1.0
CLOCK_SAMPLE_SECONDS = 0.05
TIMEDATECTL_TIMEOUT_SECONDS = 5.0


@dataclass
class CheckResult:
    """One line of the doctor's report: what was checked and what it found."""

    label: str
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    # Facts shown after the label, such as the FFmpeg version.
    detail: str = ""

    @property
    def status(self) -> str:
        if self.problems:
            return "FAIL"
        return "WARN" if self.warnings else "ok"


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
    """Return problems unless ``path`` is free, writable, and has free space.

    A data directory is not free while a running box holds its lock.
    """
    if is_locked(path):
        owner = read_owner(path)
        by = f" (process {owner})" if owner else ""
        return [
            f"data directory {path} is in use by a running box{by}; stop it"
            " or choose another --data-dir"
        ]
    if path.exists() and not path.is_dir():
        return [
            f"data directory {path} is not a directory; remove or rename that"
            " file, or choose another --data-dir"
        ]
    try:
        # Private, as serve creates it: serve keeps the mode of an existing
        # data directory, which contains stream keys and recordings.
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
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


def check_ffmpeg() -> CheckResult:
    """Report PyAV's FFmpeg version; a problem for each FFmpeg part it lacks."""
    libraries = ", ".join(
        f"{name} {'.'.join(map(str, version))}"
        for name, version in sorted(av.library_versions.items())
    )
    version = getattr(av, "ffmpeg_version_info", "unknown")
    problems = []
    for names, mode, kind in (
        (REQUIRED_DECODERS, "r", "decoder"),
        (REQUIRED_ENCODERS, "w", "encoder"),
    ):
        for name in names:
            try:
                av.Codec(name, mode)
            # PyAV raises UnknownCodecError, a ValueError, for a missing codec.
            except ValueError:
                problems.append(f"FFmpeg has no {name} {kind}; install a full PyAV")
    for name in REQUIRED_FORMATS:
        if name not in av.formats_available:
            problems.append(f"FFmpeg has no {name} format; install a full PyAV")
    return CheckResult(
        f"FFmpeg {version} (PyAV {av.__version__}: {libraries})", problems
    )


def check_clock(
    now: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    ntp_synchronized: Callable[[], bool | None] | None = None,
) -> CheckResult:
    """Check that the wall clock is set; warn if it steps or NTP is not in sync.

    The arguments exist so tests can pass other clocks.
    """
    wall_start, steady_start = now(), monotonic()
    time.sleep(CLOCK_SAMPLE_SECONDS)
    wall_end, steady_end = now(), monotonic()
    moment = datetime.fromtimestamp(wall_end, UTC)
    problems = []
    warnings = []
    if not MIN_PLAUSIBLE_YEAR <= moment.year <= MAX_PLAUSIBLE_YEAR:
        problems.append(
            f"the system clock reads {moment:%Y-%m-%d %H:%M:%S} UTC, which is not"
            " a plausible date; set the clock or enable NTP, because access"
            " tokens, TLS certificates and webhook signatures depend on it"
        )
    step = (wall_end - wall_start) - (steady_end - steady_start)
    if abs(step) > MAX_CLOCK_STEP_SECONDS:
        warnings.append(
            f"the wall clock moved {step:+.1f} s against the monotonic clock"
            " during the check; something is stepping the clock"
        )
    synchronized = (ntp_synchronized or ntp_synchronized_state)()
    if synchronized is False:
        warnings.append(
            "the clock is not synchronized with NTP (timedatectl reports"
            " NTPSynchronized=no); enable it with timedatectl set-ntp true"
        )
    sync_text = {True: "NTP synchronized", False: "NTP not synchronized"}
    detail = sync_text.get(synchronized, "NTP state unknown")
    label = f"clock {moment:%Y-%m-%d %H:%M:%S} UTC, {detail}"
    return CheckResult(label, problems, warnings)


def ntp_synchronized_state() -> bool | None:
    """Return systemd's NTPSynchronized property, or None when it cannot be read.

    None covers machines without systemd or timedatectl, such as containers.
    """
    command = shutil.which("timedatectl")
    if command is None:
        return None
    try:
        completed = subprocess.run(
            [command, "show", "--property=NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=TIMEDATECTL_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = completed.stdout.strip()
    if completed.returncode != 0 or value not in ("yes", "no"):
        return None
    return value == "yes"


def listening_ports(config: Config) -> list[tuple[str, str, int]]:
    """Return (label, setting, port) for each port that the box listens on.

    RTMPS and HTTPS count only when TLS is on (a certificate and key are
    set) and their ports are other than 0.
    """
    ports = [("HTTP", "http_port", config.http_port)]
    ports.append(("RTMP", "rtmp_port", config.rtmp_port))
    if config.tls_enabled:
        for label, setting in (("RTMPS", "rtmps_port"), ("HTTPS", "https_port")):
            port = getattr(config, setting)
            if port:
                ports.append((label, setting, port))
    return ports


def check_tls(config: Config) -> CheckResult | None:
    """Load the TLS certificate and key as serve would; None when TLS is off."""
    if not config.tls_enabled:
        return None
    try:
        tls.server_context(config)
    except ConfigError as exc:
        return CheckResult("TLS certificate", [str(exc)])
    return CheckResult("TLS certificate", [], detail=config.tls_cert_file)


def check_ports(config: Config) -> list[CheckResult]:
    """Check each listening port, and that no two settings share a port."""
    results = []
    seen: dict[int, str] = {}
    for label, setting, port in listening_ports(config):
        problems = check_port(config.host, port, setting)
        if port and port in seen:
            problems.append(
                f"{setting}: {port} is also the {seen[port]}; choose another port"
            )
        seen.setdefault(port, setting)
        results.append(CheckResult(f"{label} port {config.host}:{port}", problems))
    return results


def run_checks(
    config: Config, statuses: Sequence[EncoderStatus], min_free_mb: int
) -> list[CheckResult]:
    """Run every check and return one result each, in the order to print them."""
    results = [
        CheckResult("H.264 encoders", check_encoders(statuses)),
        check_ffmpeg(),
        *check_ports(config),
        CheckResult(
            f"data directory {config.data_path}",
            check_data_dir(config.data_path, min_free_mb),
        ),
        check_clock(),
    ]
    tls_result = check_tls(config)
    if tls_result is not None:
        results.insert(2, tls_result)
    return results
