"""Benchmark: HLS serving throughput of the box against nginx on the same files.

One looping RTMP publisher (``ffmpeg -re -stream_loop -1 -c copy`` of a
1280x720, 30 fps, 3 Mbit/s H.264 and AAC clip) pushes to the box, which
writes fMP4 HLS with 2 s segments. nginx serves the box's HLS folder as
static files at the same paths, so both servers hand out the very same
playlists and segments while the stream is live.

``--viewers`` viewers then load each server in turn for ``--seconds``. A
viewer opens the multivariant playlist and the init segment once. Then it
repeats two requests without pause: it reloads the media playlist and
fetches one of the segments listed there, each segment in turn. Each
viewer keeps one keep-alive connection, like a player. The viewers are
split over ``--processes`` client processes, which share the machine's
CPUs with the server. On a machine with few cores the clients can be the
limit, so the script also prints the CPU share of each server and of the
client processes. The client processes set fixed thresholds in glibc's
malloc (``steady_allocator``), so that their page faults do not change
from run to run.

With ``--rate R`` the viewers together make R requests a second, paced,
and the ratio printed is of the servers' CPU per request (nginx's over the
box's): how many requests the box serves per CPU second, as a share of
nginx's. Neither server is then short of CPU, so the clients that share
the machine weigh less on the ratio.

Prints requests per second, MiB per second, and p50 and p99 latency of
playlists and segments for each server, and the ratio box / nginx. The box
rewrites each playlist per viewer (session signature in its URIs) and
checks access on each request, while nginx sends the files as they are.

With ``--references``, two more servers from bench/hls_reference.py serve
the same folder in turn, without access checks. One is a bare aiohttp app
with the box's own segment response, the other a bare asyncio protocol
that reads only the request line. Their ratios to nginx show how much of
the gap is the box's work and how much is Python and its HTTP stack.

Single runs of the ratio move by several hundredths with the machine. With
``--rounds N`` the script loads the servers N times on the same live stream,
nginx first in every other round, and prints the median ratio. Usage:

    python bench/hls_serving.py [--viewers 100] [--seconds 20] [--rounds 1]
        [--rate R] [--references]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import harness
from yarl import URL

CLIP_SECONDS = 10
# mallopt(3) parameters of glibc.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
REQUEST_TIMEOUT = 30.0
REFERENCES = ("aiohttp", "asyncio")
REFERENCE_SCRIPT = Path(__file__).with_name("hls_reference.py")


@dataclass
class Tally:
    """Requests that one client process made, by kind."""

    playlist_seconds: list[float] = field(default_factory=list)
    segment_seconds: list[float] = field(default_factory=list)
    bytes: int = 0
    errors: int = 0

    def merge(self, other: Tally) -> None:
        self.playlist_seconds += other.playlist_seconds
        self.segment_seconds += other.segment_seconds
        self.bytes += other.bytes
        self.errors += other.errors


def uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def map_uri(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            return line.split('URI="', 1)[1].split('"', 1)[0]
    return None


async def get(
    session: aiohttp.ClientSession, url: URL, tally: Tally, kind: list[float]
) -> bytes | None:
    started = time.perf_counter()
    try:
        async with session.get(url) as response:
            body = await response.read()
            ok = response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        ok, body = False, b""
    if not ok:
        tally.errors += 1
        return None
    kind.append(time.perf_counter() - started)
    tally.bytes += len(body)
    return body


async def viewer(
    url: URL, until: float, tally: Tally, pace: tuple[float, float] | None = None
) -> None:
    """Load ``url`` as one viewer until ``until``.

    With ``pace`` (interval, offset in seconds) the viewer starts a
    playlist and segment pair every interval, from ``offset`` on, instead
    of without pause.
    """
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        text = await get(session, url, tally, tally.playlist_seconds)
        if text is None:
            return
        media_url = url.join(URL(uris(text.decode())[0]))
        turn = 0
        initialized = False
        started = time.monotonic()
        while time.monotonic() < until:
            if pace is not None:
                interval, offset = pace
                delay = started + offset + turn * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() >= until:
                    break
            body = await get(session, media_url, tally, tally.playlist_seconds)
            if body is None:
                await asyncio.sleep(0.1)
                continue
            playlist = body.decode()
            if not initialized and (init := map_uri(playlist)) is not None:
                # The init segment counts in neither the requests nor the bytes.
                init_url = media_url.join(URL(init))
                initialized = await get(session, init_url, Tally(), []) is not None
            segments = uris(playlist)
            if segments:
                segment_url = media_url.join(URL(segments[turn % len(segments)]))
                await get(session, segment_url, tally, tally.segment_seconds)
            turn += 1


async def client_process_main(
    url: str, viewers: range, total: int, seconds: float, rate: float | None
) -> Tally:
    """Run the viewers numbered ``viewers`` of ``total``.

    With ``rate``, all ``total`` viewers together make that many requests a
    second, their pairs spread evenly over each interval.
    """
    tally = Tally()
    until = time.monotonic() + seconds
    paces: list[tuple[float, float] | None] = [None] * len(viewers)
    if rate is not None:
        interval = 2 * total / rate
        paces = [(interval, index * interval / total) for index in viewers]
    await asyncio.gather(*(viewer(URL(url), until, tally, pace) for pace in paces))
    return tally


def client_process(
    url: str, viewers: range, total: int, seconds: float, rate: float | None
) -> Tally:
    steady_allocator()
    return asyncio.run(client_process_main(url, viewers, total, seconds, rate))


def steady_allocator() -> None:
    """Make glibc's malloc keep freed memory, in this client process.

    Each viewer keeps a segment body of about 750 KiB while it reads it.
    With glibc's defaults the allocator moves its threshold for mapping
    large blocks, and gives memory back to the kernel, by the history of
    the process. So the clients took 1 to 20 page faults per request from
    run to run, on either server, and those faults cost system time on the
    cores that the servers share. Fixed thresholds keep the clients' cost
    the same for both servers.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(M_MMAP_THRESHOLD, 64 * 2**20)
    mallopt(M_TRIM_THRESHOLD, 1024 * 2**20)


@dataclass
class Phase:
    name: str
    seconds: float
    tally: Tally
    server_cpu: float  # share of one core
    client_cpu: float  # share of one core, all client processes together
    server_system: float = 0.0  # the part of server_cpu spent in the kernel

    @property
    def requests_per_second(self) -> float:
        count = len(self.tally.playlist_seconds) + len(self.tally.segment_seconds)
        return count / self.seconds

    @property
    def mib_per_second(self) -> float:
        return self.tally.bytes / self.seconds / 2**20


def load(name: str, url: str, server_cpu, args: argparse.Namespace) -> Phase:
    """Run the viewers against ``url`` in client processes for --seconds.

    ``server_cpu`` returns the server's (user, system) CPU seconds so far.
    """
    shares = [args.viewers // args.processes] * args.processes
    for index in range(args.viewers % args.processes):
        shares[index] += 1
    user_start, system_start = server_cpu()
    clients_start = _children_cpu_seconds()
    started = time.monotonic()
    tally = Tally()
    ranges = []
    for share in shares:
        first = ranges[-1].stop if ranges else 0
        ranges.append(range(first, first + share))
    with concurrent.futures.ProcessPoolExecutor(args.processes) as pool:
        futures = [
            pool.submit(
                client_process, url, viewers, args.viewers, args.seconds, args.rate
            )
            for viewers in ranges
            if viewers
        ]
        for future in futures:
            tally.merge(future.result(timeout=args.seconds + 2 * REQUEST_TIMEOUT))
    elapsed = time.monotonic() - started
    # The pool has ended and been waited for, so its processes' CPU time is
    # in RUSAGE_CHILDREN; the servers are still running, so theirs is not.
    clients = (_children_cpu_seconds() - clients_start) / elapsed
    user_end, system_end = server_cpu()
    user = (user_end - user_start) / elapsed
    system = (system_end - system_start) / elapsed
    return Phase(name, args.seconds, tally, user + system, clients, system)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_phase(phase: Phase) -> None:
    tally = phase.tally
    requests = phase.requests_per_second
    cpu_per_request = 1000 * phase.server_cpu / requests if requests else 0.0
    system_per_request = 1000 * phase.server_system / requests if requests else 0.0
    print(
        f"{phase.name}: {requests:.0f} requests/s,"
        f" {phase.mib_per_second:.1f} MiB/s, server {100 * phase.server_cpu:.0f}%"
        f" of a core ({cpu_per_request:.3f} ms CPU per request,"
        f" {system_per_request:.3f} ms of it in the kernel),"
        f" clients {100 * phase.client_cpu:.0f}%, {tally.errors} errors"
    )
    for label, values in (
        ("playlists", tally.playlist_seconds),
        ("segments", tally.segment_seconds),
    ):
        if not values:
            print(f"  {label}: none")
            continue
        milliseconds = [1000 * value for value in values]
        print(
            f"  {label}: {len(values)} requests, p50"
            f" {statistics.median(milliseconds):.1f} ms,"
            f" p99 {harness.percentile(milliseconds, 0.99):.1f} ms"
        )


async def wait_segments(url: str, count: int, timeout: float) -> None:
    """Wait until the media playlist behind ``url`` lists ``count`` segments."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(url) as response:
                text = await response.text() if response.status == 200 else ""
            if text:
                media_url = URL(url).join(URL(uris(text)[0]))
                async with session.get(media_url) as response:
                    if len(uris(await response.text())) >= count:
                        return
            await asyncio.sleep(0.5)
    raise SystemExit(f"the box listed fewer than {count} segments in {timeout:.0f} s")


async def prepare(box: harness.Box, nginx: harness.Nginx, flv: Path) -> tuple:
    streams = await harness.box_streams(box, 1)
    await harness.wait_nginx(nginx)
    push = harness.start_looping_push(flv, harness.box_rtmp_url(box, streams[0]))
    return streams[0], push


def run(args: argparse.Namespace) -> list[dict[str, Phase]]:
    """Load every server once per round; return each round's phases by name."""
    work = Path(tempfile.mkdtemp(prefix="realcast-bench-hls-"))
    box = nginx = push = None
    try:
        flv = work / "720p30-3mbps.flv"
        print(f"encoding the {CLIP_SECONDS} s input clip", flush=True)
        harness.make_flv(flv, CLIP_SECONDS, 1280, 720, 3000)
        settings = {} if args.low_latency else {"REALCAST_HLS_LOW_LATENCY": "false"}
        box = harness.start_box(work, **settings)
        nginx = harness.start_nginx(work, rtmp=False, hls_dir=box.hls_root)
        stream, push = asyncio.run(prepare(box, nginx, flv))
        box_url = harness.box_hls_url(box, stream)
        nginx_url = f"{nginx.base_url}/hls/{stream['id']}/index.m3u8"
        # Three segments make a full window for a player to start from.
        asyncio.run(wait_segments(box_url, 3, 60))

        def box_cpu() -> tuple[float, float]:
            return harness.cpu_times(box.process.pid)

        rounds = []
        for number in range(args.rounds):
            print(f"round {number + 1} of {args.rounds}", flush=True)
            phases = {}
            # Odd rounds load nginx first, so that neither server always
            # gets the machine in the state the other one leaves it in.
            order = ("box", "nginx") if number % 2 == 0 else ("nginx", "box")
            for name in order:
                if name == "box":
                    phases[name] = load("box", box_url, box_cpu, args)
                else:
                    phases[name] = load("nginx", nginx_url, nginx.cpu_times, args)
            if args.references:
                for kind in REFERENCES:
                    phases[f"reference {kind}"] = load_reference(
                        kind, box.hls_root, nginx_url, args
                    )
            rounds.append(phases)
        return rounds
    finally:
        for process in (push, box and box.process, nginx and nginx.process):
            if process is not None:
                harness.stop_process(process)
        harness.remove_tree(work)


def wait_listening(process: subprocess.Popen, port: int, timeout: float) -> None:
    """Wait until ``process`` accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"the reference server exited with status {process.returncode}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(
        f"timed out: no reference server listening on port {port} after {timeout:g} s"
    )


def load_reference(
    kind: str, root: Path, nginx_url: str, args: argparse.Namespace
) -> Phase:
    """Start a reference server on ``root``, load it like the others, stop it."""
    port = harness.free_port()
    url = str(URL(nginx_url).with_port(port))
    process = subprocess.Popen(
        [sys.executable, str(REFERENCE_SCRIPT), kind, str(port), str(root)]
    )
    try:
        wait_listening(process, port, 15)
        asyncio.run(wait_segments(url, 3, 30))

        def reference_cpu() -> tuple[float, float]:
            return harness.cpu_times(process.pid)

        return load(f"reference {kind}", url, reference_cpu, args)
    finally:
        harness.stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=100, help="concurrent viewers")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="seconds of load per server"
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="client processes for the viewers"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="load the servers this many times, alternating which goes first,"
        " and print the median ratio",
    )
    parser.add_argument(
        "--limit",
        type=float,
        help="seconds after which the run stops (default: 2 x --seconds + 300)",
    )
    parser.add_argument(
        "--regular",
        dest="low_latency",
        action="store_false",
        help="run the box with hls_low_latency = false, so that it serves"
        " regular playlists, as nginx does",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="requests per second that all viewers together make, paced,"
        " instead of loading the servers without pause; the ratio is then"
        " of the servers' CPU per request",
    )
    parser.add_argument(
        "--references",
        action="store_true",
        help="also load the two reference servers of bench/hls_reference.py",
    )
    args = parser.parse_args()
    if args.viewers < 1 or args.processes < 1 or args.rounds < 1:
        parser.error("--viewers, --processes and --rounds must be at least 1")
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate must be above 0 requests a second, not {args.rate:g}")
    args.processes = min(args.processes, args.viewers)
    if args.limit is None:
        servers = 2 + (len(REFERENCES) if args.references else 0)
        args.limit = args.rounds * servers * (args.seconds + 30) + 300
    nginx_version = harness.ensure_nginx_rtmp()
    harness.set_time_limit(args.limit)
    rounds = run(args)

    print(harness.machine_line())
    print(f"peer: {nginx_version}, static files, access_log off, sendfile on")
    kind = "low-latency (the default)" if args.low_latency else "regular (--regular)"
    print(f"box playlists: {kind}")
    print(
        f"viewers: {args.viewers} in {args.processes} client processes,"
        f" {args.seconds:g} s per server, {args.rounds} round(s)"
    )
    ratios: dict[str, list[float]] = {}
    for number, phases in enumerate(rounds, 1):
        if args.rounds > 1:
            first = "nginx" if number % 2 == 0 else "box"
            print(f"round {number} ({first} loaded first):")
        for name in ("box", "nginx", *(f"reference {kind}" for kind in REFERENCES)):
            if name in phases:
                print_phase(phases[name])
        nginx = phases["nginx"]
        if nginx.requests_per_second == 0 or nginx.mib_per_second == 0:
            raise SystemExit("nginx served nothing, so there is no ratio")
        for name, phase in phases.items():
            if name == "nginx":
                continue
            if args.rate is None:
                ratio = phase.requests_per_second / nginx.requests_per_second
                print(
                    f"throughput ratio {name} / nginx: requests {ratio:.2f},"
                    f" bytes {phase.mib_per_second / nginx.mib_per_second:.2f}"
                )
            else:
                # Requests per CPU second: what each server would serve with
                # a core of its own and clients elsewhere.
                ratio = cpu_per_request(nginx) / cpu_per_request(phase)
                print(
                    f"CPU per request ratio nginx / {name}: {ratio:.2f}"
                    f" ({name} serves {ratio:.2f} times nginx's requests"
                    " per CPU second)"
                )
            ratios.setdefault(name, []).append(ratio)
        if args.rate is not None:
            for name, phase in phases.items():
                if phase.requests_per_second < 0.95 * args.rate:
                    print(
                        f"warning: {name} served {phase.requests_per_second:.0f}"
                        f" of the {args.rate:g} requests a second asked for,"
                        " so it or the clients ran out of CPU; lower --rate"
                    )
    if args.rounds > 1:
        kind = "request" if args.rate is None else "CPU per request"
        for name, values in ratios.items():
            listed = ", ".join(f"{value:.2f}" for value in values)
            print(
                f"median {kind} ratio over {len(values)} rounds, {name}:"
                f" {statistics.median(values):.2f} ({listed})"
            )


def cpu_per_request(phase: Phase) -> float:
    requests = phase.requests_per_second
    return phase.server_cpu / requests if requests else float("inf")


if __name__ == "__main__":
    main()
