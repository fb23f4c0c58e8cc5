"""Smoke test of the built binary: RTMP in, playable HLS out, without the source.

Run by ``./build.sh test`` with build.sh's virtual environment, which has
PyAV to decode the output. The binary runs with an empty environment apart
from HOME, PATH, LANG and TMPDIR, in a temporary working directory. So a
module or data file missing from the bundle fails here, even on a machine
that has the repository and its packages installed. Run as root where
util-linux's unshare exists, the binary also runs in a private mount
namespace with every Python of the machine hidden
(packaging/without-python.sh), which shows it needs none.

It checks the bundled files, ``--version`` and ``doctor`` on free ports.
Then it starts ``serve`` on 127.0.0.1 with a temporary data directory,
loads the admin UI page, and signs up, logs in and creates an app and a
stream through the REST API. The ffmpeg CLI pushes 6 s of H.264 and AAC
over RTMP, and the HLS playlists and segments are fetched over HTTP and
decoded with PyAV. Last, SIGTERM must give a clean exit, and a one-file
build must leave no unpack directory behind.

Usage: python packaging/smoke_test.py dist/realcast-box
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
PUSH_SECONDS = 6
FPS = 25
# Generous limits: the machine may be shared, and a one-file build unpacks
# itself before it starts.
START_TIMEOUT = 120.0
STATUS_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
EMAIL = "smoke@example.com"
PASSWORD = "correct horse battery"


class SmokeTestError(Exception):
    """A check of the smoke test failed."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeTestError(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HIDE_PYTHON = Path(__file__).with_name("without-python.sh")


def python_locations() -> list[str]:
    """Return the folders and interpreters of the Pythons on this machine.

    The system prefix itself (``/usr``) is never in the list, only what
    belongs to Python in it: the standard library, site-packages, the
    interpreters on PATH and the shared libpython.
    """
    found: set[Path] = set()
    for scheme_path in ("stdlib", "platstdlib", "purelib", "platlib"):
        found.add(Path(sysconfig.get_paths()[scheme_path]))
    if sys.prefix != sys.base_prefix:
        found.add(Path(sys.prefix))
    found.add(Path(sys.base_prefix) / "lib")
    for pattern in (
        "/usr/lib/python3*",
        "/usr/local/lib/python3*",
        "/usr/lib/*/libpython3*",
        "/usr/local/lib/libpython3*",
    ):
        found.update(Path(match) for match in glob.glob(pattern))
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        for match in glob.glob(os.path.join(folder, "python*")):
            found.add(Path(match))
    found.add(Path(sys.executable))
    # Keep only paths that exist, and never a top-level system folder.
    system = {Path("/"), Path("/usr"), Path("/usr/local"), Path("/usr/lib")}
    return sorted(str(path) for path in found if path.exists() and path not in system)


def launcher() -> list[str]:
    """Return the prefix that runs the binary with every Python hidden.

    Hiding takes a private mount namespace, so it needs root and util-linux's
    unshare. Elsewhere the binary runs unchanged and the test prints a note.
    """
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        return []
    return [unshare, "--mount", str(HIDE_PYTHON), *python_locations(), "--"]


def check_no_python(env: dict, cwd: Path) -> None:
    """Check that the launcher really hides Python from what it runs."""
    prefix = launcher()
    if not prefix:
        print("note  not root or no unshare: the binary runs with Python present")
        return
    probe = "import sys; print(sys.version)"
    for interpreter in ("python3", sys.executable):
        result = subprocess.run(
            [*prefix, "/bin/sh", "-c", f'{interpreter} -c "{probe}"'],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        check(
            result.returncode != 0,
            f"{interpreter} still runs with Python hidden: {result.stdout!r}",
        )
    hidden = len(prefix) - 4
    print(f"ok    no Python: the binary runs with {hidden} Python paths hidden")


def clean_environment(home: Path, tmpdir: Path) -> dict[str, str]:
    """Return the environment the binary runs with: no Python variables at all."""
    return {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmpdir),
    }


def request(
    base: str,
    method: str,
    path: str,
    body: dict | None = None,
    token: str | None = None,
) -> tuple[int, bytes]:
    """Send one HTTP request to the box; return (status, body)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    message = urllib.request.Request(base + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(message, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def api(
    base: str,
    method: str,
    path: str,
    expected: int,
    body: dict | None = None,
    token: str | None = None,
) -> dict:
    status, payload = request(base, method, path, body, token)
    check(
        status == expected,
        f"{method} {path}: {status} instead of {expected}: {payload!r}",
    )
    return json.loads(payload)


def run_binary(
    binary: Path, *args: str, env: dict, cwd: Path
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*launcher(), str(binary), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


# Files the bundle must contain, as patterns of paths below sys._MEIPASS.
BUNDLED_FILES = (
    r"ui/index\.html",
    r"realcast\.toml",
    r"config/lan\.toml",
    r"av\.libs/libavcodec-[^/]+\.so[.0-9]*",
    r"av\.libs/libx264-[^/]+\.so[.0-9]*",
    r"av\.libs/libx265-[^/]+\.so[.0-9]*",
    r"licenses/README\.md",
    r"licenses/realcast-box/LICENSE",
    r"licenses/common/GPL-2",
    r"licenses/common/GPL-3",
    r"licenses/ffmpeg/ffmpeg-build\.txt",
    r"licenses/packages/av/LICENSE\.txt",
)


def bundled_names(binary: Path) -> list[str]:
    """Return the paths of the files that the build bundles with the box."""
    internal = binary.parent / "_internal"
    if internal.is_dir():
        return [path.relative_to(internal).as_posix() for path in internal.rglob("*")]
    from PyInstaller.archive.readers import CArchiveReader

    return list(CArchiveReader(str(binary)).toc)


def check_contents(binary: Path) -> None:
    names = bundled_names(binary)
    missing = [
        pattern
        for pattern in BUNDLED_FILES
        if not any(re.fullmatch(pattern, name) for name in names)
    ]
    check(not missing, f"files missing from the bundle: {missing}")
    print("ok    bundle: UI, configs, FFmpeg with x264 and x265, licence texts")


def check_version(binary: Path, env: dict, cwd: Path) -> None:
    with (ROOT / "pyproject.toml").open("rb") as file:
        version = tomllib.load(file)["project"]["version"]
    result = run_binary(binary, "--version", env=env, cwd=cwd)
    check(
        result.returncode == 0, f"--version exited {result.returncode}: {result.stderr}"
    )
    check(
        result.stdout.strip() == f"realcast-box, version {version}",
        f"--version printed {result.stdout!r}, expected version {version}",
    )
    print(f"ok    --version: {result.stdout.strip()}")


def check_doctor(binary: Path, env: dict, cwd: Path, data_dir: Path) -> None:
    args = ["doctor", "--host", "127.0.0.1", "--data-dir", str(data_dir)]
    args += ["--http-port", str(free_port()), "--rtmp-port", str(free_port())]
    result = run_binary(binary, *args, env=env, cwd=cwd)
    output = result.stdout + result.stderr
    check(result.returncode == 0, f"doctor exited {result.returncode}:\n{output}")
    check(
        re.search(r"^libx264\s+software\s+available", result.stdout, re.MULTILINE)
        is not None,
        f"doctor did not find a working libx264 in the bundled FFmpeg:\n{output}",
    )
    print("ok    doctor: the box can run, bundled libx264 encodes")


def wait_until_ready(process: subprocess.Popen, base: str, log: Path) -> float:
    """Poll /healthz until it returns 200; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT:
        if process.poll() is not None:
            raise SmokeTestError(
                f"serve exited {process.returncode} before it was ready:\n"
                + log.read_text(errors="replace")
            )
        try:
            status, _ = request(base, "GET", "/healthz")
        except OSError:
            status = None
        if status == 200:
            return time.monotonic() - started
        time.sleep(0.2)
    raise SmokeTestError(f"/healthz did not return 200 within {START_TIMEOUT:.0f} s")


def push_rtmp(url: str) -> None:
    """Publish PUSH_SECONDS of test video and a tone with the ffmpeg CLI."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error"]
    command += ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}"]
    command += ["-f", "lavfi", "-i", "sine=frequency=440"]
    command += ["-t", str(PUSH_SECONDS)]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS), "-bf", "0"]
    command += ["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-f", "flv", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    check(
        result.returncode == 0,
        f"ffmpeg publisher exited {result.returncode}: {result.stderr}",
    )


def wait_for_status(base: str, token: str, stream_id: str, expected: str) -> None:
    deadline = time.monotonic() + STATUS_TIMEOUT
    status = None
    while time.monotonic() < deadline:
        status = api(base, "GET", f"/api/streams/{stream_id}/status", 200, token=token)
        if status["status"] == expected:
            return
        time.sleep(0.2)
    raise SmokeTestError(f"stream status stayed {status} instead of {expected}")


def fetch(base: str, path: str) -> bytes:
    status, payload = request(base, "GET", path)
    check(status == 200, f"GET {path}: {status}: {payload[:200]!r}")
    return payload


def check_hls(base: str, stream_id: str) -> None:
    """Fetch the stream's HLS output and decode every frame with PyAV."""
    multivariant = fetch(base, f"/hls/{stream_id}/index.m3u8").decode()
    check(multivariant.startswith("#EXTM3U"), f"not a playlist:\n{multivariant}")
    variant = next(
        line for line in multivariant.splitlines() if line and not line.startswith("#")
    )
    media_path = f"/hls/{stream_id}/{variant}"
    media_playlist = fetch(base, media_path).decode()
    check("#EXT-X-ENDLIST" in media_playlist, f"playlist not ended:\n{media_playlist}")
    media_base = media_path.rsplit("/", 1)[0]

    joined = io.BytesIO()
    segments = 0
    for line in media_playlist.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            uri = re.search(r'URI="([^"]+)"', line).group(1)
            joined.write(fetch(base, f"{media_base}/{uri}"))
        elif line and not line.startswith("#"):
            joined.write(fetch(base, f"{media_base}/{line}"))
            segments += 1
    check(segments >= 2, f"{segments} segments in the playlist:\n{media_playlist}")

    joined.seek(0)
    video_frames = audio_frames = 0
    with av.open(joined, format="mp4") as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                video_frames += 1
            elif isinstance(frame, av.AudioFrame):
                audio_frames += 1
    check(
        video_frames == PUSH_SECONDS * FPS,
        f"decoded {video_frames} video frames, expected {PUSH_SECONDS * FPS}",
    )
    check(audio_frames > 0, "decoded no audio frames")
    print(
        f"ok    HLS: {segments} segments decode to {video_frames} video and"
        f" {audio_frames} audio frames"
    )


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise SmokeTestError(
            f"serve did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM"
        ) from None


def check_serve(
    binary: Path, env: dict, cwd: Path, data_dir: Path, tmpdir: Path
) -> None:
    http_port, rtmp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    # A config file rather than flags, so that loading TOML in the bundle is
    # covered too. No reconnect window: the stream goes offline, and its
    # playlist gets its end tag, as soon as the publisher disconnects.
    config = cwd / "smoke.toml"
    config.write_text(
        f'host = "127.0.0.1"\nhttp_port = {http_port}\nrtmp_port = {rtmp_port}\n'
        f'data_dir = "{data_dir}"\nreconnect_window_seconds = 0.0\n'
    )
    log = cwd / "serve.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [*launcher(), str(binary), "serve", "--config", str(config)],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        seconds = wait_until_ready(process, base, log)
        print(f"ok    serve: /healthz returned 200 after {seconds:.1f} s")

        status, page = request(base, "GET", "/")
        check(
            status == 200 and b"<html" in page.lower(),
            f"GET / returned {status}: no admin UI",
        )
        print("ok    admin UI: GET / returns the bundled index.html")

        api(
            base,
            "POST",
            "/api/auth/register",
            201,
            {"email": EMAIL, "password": PASSWORD, "full_name": "Smoke Test"},
        )
        login = api(
            base, "POST", "/api/auth/login", 200, {"email": EMAIL, "password": PASSWORD}
        )
        token = login["access_token"]
        app = api(base, "POST", "/api/apps", 201, {"name": "Smoke app"}, token)
        stream = api(
            base,
            "POST",
            "/api/streams",
            201,
            {"app_id": app["id"], "title": "Smoke"},
            token,
        )
        print(f"ok    API: user, app {app['id']} and stream {stream['id']} created")

        push_rtmp(f"rtmp://127.0.0.1:{rtmp_port}/live/{stream['stream_key']}")
        wait_for_status(base, token, stream["id"], "offline")
        check_hls(base, stream["id"])
    finally:
        code = stop(process) if process.poll() is None else process.returncode
    log_text = log.read_text(errors="replace")
    check(code == 0, f"serve exited {code} after SIGTERM:\n{log_text}")
    check("Traceback" not in log_text, f"the server log has a traceback:\n{log_text}")
    # A one-file build unpacks into $TMPDIR/_MEI*, and must remove it on exit.
    leftovers = sorted(path.name for path in tmpdir.iterdir())
    check(not leftovers, f"files left in TMPDIR after exit: {leftovers}")
    print("ok    SIGTERM: exit code 0, no unpacked files left")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python packaging/smoke_test.py BINARY", file=sys.stderr)
        return 2
    binary = Path(sys.argv[1]).resolve()
    if not os.access(binary, os.X_OK):
        print(f"not an executable: {binary}", file=sys.stderr)
        return 2
    if shutil.which("ffmpeg") is None:
        print("the ffmpeg CLI is missing: apt-get install ffmpeg", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="realcast-smoke-") as temp:
        work = Path(temp)
        home, tmpdir, cwd = work / "home", work / "tmp", work / "cwd"
        for folder in (home, tmpdir, cwd):
            folder.mkdir()
        env = clean_environment(home, tmpdir)
        try:
            check_contents(binary)
            check_no_python(env, cwd)
            check_version(binary, env, cwd)
            check_doctor(binary, env, cwd, work / "doctor-data")
            check_serve(binary, env, cwd, work / "data", tmpdir)
        except (SmokeTestError, subprocess.TimeoutExpired) as exc:
            print(f"FAIL  {exc}", file=sys.stderr)
            return 1
    print(f"The binary {binary} passed the smoke test.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
