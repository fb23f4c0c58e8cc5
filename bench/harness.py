"""Shared parts of the benchmarks: the box and nginx-rtmp as child processes.

Both servers listen only on 127.0.0.1, on free ports, with their files in a
temporary folder. Every child process is started here and ended by its PID.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The box's API rate limits at their maximum values (1,000,000 a minute,
# 10,000,000 an hour), far above what the benchmarks send, so that they
# measure the server and not the limiter.
BENCH_LIMITS = {
    "REALCAST_RATE_LIMIT_PER_MINUTE": "1000000",
    "REALCAST_RATE_LIMIT_PER_HOUR": "10000000",
    "REALCAST_STREAM_RATE_LIMIT_PER_MINUTE": "1000000",
    "REALCAST_STREAM_RATE_LIMIT_PER_HOUR": "10000000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    for line in text.splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    return platform.machine()


def machine_line() -> str:
    cpu = cpu_model()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"machine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" load average {load}"
    )


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Send SIGTERM to the child ``process``, then SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def set_time_limit(seconds: float) -> None:
    """Raise SystemExit in the main thread after ``seconds``.

    The exception unwinds through the callers' ``finally`` blocks, which
    stop the child processes.
    """

    def expire(signal_number: int, frame: object) -> None:
        raise SystemExit(f"the benchmark ran past its time limit of {seconds:g} s")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(max(1, math.ceil(seconds)))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cpu_seconds(pid: int, children: bool = False) -> float:
    """Return the user plus system CPU time of ``pid`` and all its threads.

    With ``children``, the CPU time of its direct child processes that are
    still running is added (nginx's worker under its master).
    """
    return sum(cpu_times(pid, children))


def cpu_times(pid: int, children: bool = False) -> tuple[float, float]:
    """Return the (user, system) CPU seconds that ``cpu_seconds`` adds up."""
    user = system = 0.0
    pids = [pid]
    if children:
        pids += child_pids(pid)
    for one in pids:
        try:
            stat = Path(f"/proc/{one}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which may contain spaces, start at
        # the state (field 3); utime and stime are fields 14 and 15.
        fields = stat.rsplit(")", 1)[1].split()
        user += int(fields[11]) / CLOCK_TICKS
        system += int(fields[12]) / CLOCK_TICKS
    return user, system


def child_pids(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(value) for value in text.split()]


def peak_rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# The box ------------------------------------------------------------------


@dataclass
class Box:
    process: subprocess.Popen
    data_dir: Path
    http_port: int
    rtmp_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def hls_root(self) -> Path:
        return self.data_dir / "hls"


def start_box(work: Path, **settings: str) -> Box:
    """Run ``python -m realcast_box serve`` with its data in ``work/box``.

    ``settings`` are extra REALCAST_* environment variables. Its log goes
    to ``work/box.log``.
    """
    data_dir = work / "box"
    http_port, rtmp_port = free_port(), free_port()
    environment = {
        **os.environ,
        **BENCH_LIMITS,
        "REALCAST_LOG_LEVEL": "warning",
        **settings,
    }
    command = [
        sys.executable, "-m", "realcast_box", "serve",
        "--host", "127.0.0.1",
        "--http-port", str(http_port),
        "--rtmp-port", str(rtmp_port),
        "--data-dir", str(data_dir),
    ]  # fmt: skip
    log = (work / "box.log").open("wb")
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    return Box(process, data_dir, http_port, rtmp_port)


async def wait_http(session: aiohttp.ClientSession, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as response:
                if response.status < 500:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"no response from {url} within {timeout:.0f} s")


async def login(
    session: aiohttp.ClientSession, base_url: str, register: bool = True
) -> dict[str, str]:
    """Log in as the bench user, registering it first; return its auth header."""
    credentials = {"email": "bench@example.com", "password": PASSWORD}
    body = {**credentials, "full_name": "Bench"}
    if register:
        async with session.post(f"{base_url}/api/auth/register", json=body) as response:
            if response.status != 201:
                raise SystemExit(f"register failed: {await response.text()}")
    async with session.post(f"{base_url}/api/auth/login", json=credentials) as response:
        token = (await response.json())["access_token"]
    return {"Authorization": f"Bearer {token}"}


async def create_app(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str]
) -> str:
    body = {"name": "Bench"}
    async with session.post(
        f"{base_url}/api/apps", json=body, headers=headers
    ) as response:
        if response.status != 201:
            raise SystemExit(f"creating the app failed: {await response.text()}")
        return (await response.json())["id"]


async def create_stream(
    session: aiohttp.ClientSession,
    base_url: str,
    headers: dict[str, str],
    app_id: str,
    title: str = "Bench",
) -> dict:
    body = {"app_id": app_id, "title": title}
    async with session.post(
        f"{base_url}/api/streams", json=body, headers=headers
    ) as response:
        if response.status != 201:
            raise SystemExit(f"creating a stream failed: {await response.text()}")
        return await response.json()


async def box_streams(box: Box, count: int) -> list[dict]:
    """Wait until the box responds, then create ``count`` passthrough streams."""
    async with aiohttp.ClientSession() as session:
        await wait_http(session, f"{box.base_url}/healthz", 60)
        headers = await login(session, box.base_url)
        app_id = await create_app(session, box.base_url, headers)
        return [
            await create_stream(session, box.base_url, headers, app_id, f"Bench {i}")
            for i in range(count)
        ]


def box_rtmp_url(box: Box, stream: dict) -> str:
    return f"rtmp://127.0.0.1:{box.rtmp_port}/live/{stream['stream_key']}"


def box_hls_url(box: Box, stream: dict) -> str:
    return f"{box.base_url}/hls/{stream['id']}/index.m3u8"


# nginx with its RTMP module -----------------------------------------------


@dataclass
class Nginx:
    process: subprocess.Popen
    prefix: Path
    http_port: int
    rtmp_port: int | None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rtmp_url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{name}"

    def hls_url(self, name: str) -> str:
        return f"{self.base_url}/hls/{name}.m3u8"

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid, children=True)

    def cpu_times(self) -> tuple[float, float]:
        return cpu_times(self.process.pid, children=True)


def ensure_nginx_rtmp() -> str:
    """Install Debian's nginx and libnginx-mod-rtmp if missing; return its version.

    On a host that runs systemd, installing nginx also starts Debian's own
    nginx service on port 80; the benchmarks do not use it.
    """
    if shutil.which("nginx") is None or not NGINX_RTMP_MODULE.exists():
        print("installing nginx and libnginx-mod-rtmp with apt-get", flush=True)
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        command = ["apt-get", "install", "-y", "--no-install-recommends"]
        subprocess.run(
            [*command, "nginx", "libnginx-mod-rtmp"], check=True, env=environment
        )
    result = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    return result.stderr.strip()


NGINX_CONFIG = """\
load_module {module};
{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
{rtmp}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
        video/iso.segment m4s;
        video/mp4 mp4;
    }}
    server {{
        listen 127.0.0.1:{http_port};
        location /hls/ {{
            alias {hls_dir}/;
            add_header Cache-Control no-cache;
        }}
    }}
}}
"""

NGINX_RTMP_BLOCK = """\
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        chunk_size 4096;
        application live {{
            live on;
            hls on;
            hls_path {hls_dir};
            hls_fragment {fragment}s;
            hls_playlist_length {playlist_length}s;
        }}
    }}
}}
"""


def start_nginx(
    work: Path,
    *,
    rtmp: bool = True,
    hls_dir: Path | None = None,
    fragment: float = 2.0,
    playlist_length: float = 12.0,
) -> Nginx:
    """Run nginx in the foreground with a config written to ``work/nginx``.

    With ``rtmp``, it accepts RTMP pushes to ``/live/NAME`` and writes HLS
    (MPEG-TS, ``fragment`` seconds) to ``hls_dir``, by default
    ``work/nginx/hls``. Its HTTP server serves ``hls_dir`` under ``/hls/``.
    One worker process, as nginx-rtmp's live module expects.
    """
    prefix = work / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    hls_dir = hls_dir or prefix / "hls"
    hls_dir.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    rtmp_port = free_port() if rtmp else None
    rtmp_block = ""
    if rtmp:
        rtmp_block = NGINX_RTMP_BLOCK.format(
            rtmp_port=rtmp_port,
            hls_dir=hls_dir,
            fragment=f"{fragment:g}",
            playlist_length=f"{playlist_length:g}",
        )
    # A master running as root hands the worker to "nobody", which could not
    # write into a temporary folder that only root may enter.
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = NGINX_CONFIG.format(
        module=NGINX_RTMP_MODULE if rtmp else "",
        user=user,
        prefix=prefix,
        rtmp=rtmp_block,
        http_port=http_port,
        hls_dir=hls_dir,
    )
    if not rtmp:
        config = config.replace("load_module ;\n", "")
    (prefix / "nginx.conf").write_text(config)
    command = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    command += ["-e", str(prefix / "error.log")]
    log = (work / "nginx.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    return Nginx(process, prefix, http_port, rtmp_port)


async def wait_nginx(nginx: Nginx, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nginx.process.poll() is not None:
            log = (nginx.prefix / "error.log").read_text(errors="replace")
            raise SystemExit(f"nginx exited with {nginx.process.returncode}:\n{log}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", nginx.http_port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise SystemExit(f"nginx did not listen within {timeout:.0f} s")


# Publishers ---------------------------------------------------------------


def make_flv(path: Path, seconds: float, width: int, height: int, kbps: int) -> None:
    """Encode a test clip the way OBS sends it: H.264, 2 s GOP, AAC, in FLV.

    Constant bit rate (maxrate = bitrate), 30 frames per second, no
    B-frames, keyframes every 60 frames.
    """
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi",
            "-i", f"testsrc2=size={width}x{height}:rate=30:duration={seconds}",
            "-f", "lavfi",
            "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
            "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k",
            "-x264-params", "nal-hrd=cbr:force-cfr=1",
            "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-bf", "0",
            "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", "-ac", "2",
            "-f", "flv", str(path),
        ],
        check=True,
        timeout=600,
    )  # fmt: skip


def start_looping_push(flv: Path, url: str) -> subprocess.Popen:
    """Push ``flv`` to ``url`` in real time, looped, without re-encoding.

    ffmpeg writes its progress (out_time_us) to its stdout.
    """
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostats",
        "-re", "-stream_loop", "-1", "-i", str(flv),
        "-c", "copy", "-f", "flv", "-progress", "pipe:1", url,
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
