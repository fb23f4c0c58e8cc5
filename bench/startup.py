"""Benchmark: time from exec to a box that accepts both RTMP and HTTP.

Starts each given build of ``realcast-box serve`` (the one-file binary, the
one-folder executable) and, for comparison, ``python -m realcast_box serve``
from this checkout, on 127.0.0.1 with free ports. From just before the exec,
it polls every 10 ms until two things work:

- HTTP: ``GET /healthz`` returns 200.
- RTMP: a TCP connect, then C0 and C1 of the RTMP handshake sent, then S0
  (version 3) and S1 read back.

The startup time of a run is the later of the two. Each command first runs
once uncounted, which creates its data directory and loads its files into
the page cache, so the counted runs measure a restart of an installed box.
The commands then take turns. Prints each build's size on disk, every run,
the median per command and each median over the source's.

Usage:

    python bench/startup.py [--runs 7] [BUILD ...]

where each BUILD is an executable: dist/realcast-box for the one-file build,
or DIR/realcast-box/realcast-box for a one-folder build.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.01
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
RTMP_VERSION = 3
RTMP_HANDSHAKE_SIZE = 1536


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/healthz", timeout=2
        ) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def rtmp_ready(port: int) -> bool:
    """Return True when the RTMP server replies to C0+C1 with S0 and S1."""
    c1 = bytes(8) + secrets.token_bytes(RTMP_HANDSHAKE_SIZE - 8)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(bytes([RTMP_VERSION]) + c1)
            reply = b""
            while len(reply) < 1 + RTMP_HANDSHAKE_SIZE:
                chunk = sock.recv(1 + RTMP_HANDSHAKE_SIZE - len(reply))
                if not chunk:
                    return False
                reply += chunk
            return reply[0] == RTMP_VERSION
    except OSError:
        return False


def start_once(command: list[str], data_dir: Path, env: dict) -> tuple[float, float]:
    """Start the box once; return seconds until HTTP and until RTMP were ready."""
    http_port, rtmp_port = free_port(), free_port()
    args = ["serve", "--host", "127.0.0.1", "--data-dir", str(data_dir)]
    args += ["--http-port", str(http_port), "--rtmp-port", str(rtmp_port)]
    args += ["--log-level", "warning"]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, *args],
        cwd=ROOT if command[0] == sys.executable else data_dir.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    http_at = rtmp_at = None
    try:
        while http_at is None or rtmp_at is None:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{command} exited {process.returncode}: "
                    + process.stderr.read().decode(errors="replace")
                )
            if time.perf_counter() - started > START_TIMEOUT:
                raise RuntimeError(f"{command} not ready within {START_TIMEOUT:.0f} s")
            if http_at is None and http_ready(http_port):
                http_at = time.perf_counter() - started
            if rtmp_at is None and rtmp_ready(rtmp_port):
                rtmp_at = time.perf_counter() - started
            time.sleep(POLL_SECONDS)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return http_at, rtmp_at


def size_on_disk(executable: Path) -> int:
    """Return the bytes of a one-file binary, or of a one-folder build's folder."""
    internal = executable.parent / "_internal"
    if not internal.is_dir():
        return executable.stat().st_size
    return sum(
        path.stat().st_size
        for path in executable.parent.rglob("*")
        if path.is_file() and not path.is_symlink()
    )


def measure(commands: dict[str, list[str]], runs: int, work: Path) -> dict[str, float]:
    """Start each command ``runs`` times, in turn; return the median per label.

    The commands take turns, run 1 of each, then run 2 of each, so that a
    change in the machine's load during the benchmark shifts all of them.
    """
    # No PYTHONPATH or REALCAST_* variables from the caller's shell.
    env = {"HOME": str(work), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env["TMPDIR"] = str(work)
    data_dirs = {}
    for label, command in commands.items():
        data_dirs[label] = work / label / "data"
        data_dirs[label].mkdir(parents=True)
        start_once(command, data_dirs[label], env)
    totals: dict[str, list[float]] = {label: [] for label in commands}
    for run in range(1, runs + 1):
        for label, command in commands.items():
            http_at, rtmp_at = start_once(command, data_dirs[label], env)
            total = max(http_at, rtmp_at)
            totals[label].append(total)
            print(
                f"{label:<10} run {run}: HTTP {http_at:.3f} s, RTMP {rtmp_at:.3f} s,"
                f" both {total:.3f} s",
                flush=True,
            )
    return {label: statistics.median(values) for label, values in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs="*", type=Path, help="Built executables.")
    parser.add_argument(
        "--runs", type=int, default=7, help="Counted starts per command."
    )
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(f"python: {sys.version.split()[0]} ({sys.executable})")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    commands = {"source": [sys.executable, "-m", "realcast_box"]}
    for build in args.builds:
        executable = build.resolve()
        label = "onedir" if (executable.parent / "_internal").is_dir() else "onefile"
        commands[label] = [str(executable)]
        size = size_on_disk(executable)
        print(f"{label:<10} size: {size / 2**20:.1f} MiB ({executable})")
    with tempfile.TemporaryDirectory(prefix="realcast-startup-") as temp:
        medians = measure(commands, args.runs, Path(temp))
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    print()
    for label, median in medians.items():
        ratio = median / medians["source"]
        print(f"{label:<10} median {median:.3f} s, {ratio:.2f}x the source's")


if __name__ == "__main__":
    main()
