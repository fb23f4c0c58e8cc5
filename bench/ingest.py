"""Benchmark: concurrent RTMP publishers on the box and on nginx-rtmp.

Encodes one 10 s clip of 1280x720 at 30 frames per second, H.264 at a
constant 3 Mbit/s with a keyframe every 2 s, and AAC at 128 kbit/s, into an
FLV file. Each publisher is an ``ffmpeg -re -stream_loop -1 -c copy``
process that pushes that file over RTMP in real time, without re-encoding.
Both servers only receive and package: the box's streams have no
transcoding profile, and nginx-rtmp writes HLS (``hls on``, 2 s fragments).

For each server in turn the script adds publishers ``--step`` at a time.
At each count it waits ``--settle`` seconds, then measures for
``--window`` seconds:

- the server's CPU time (user plus system, all threads, from /proc/PID/stat;
  for nginx, its master and worker processes), per publisher, in percent
  of one core;
- whether each publisher kept real time: the media it sent grew by at
  least 97% of the wall time (ffmpeg's ``-progress`` out_time);
- how busy the whole machine was (/proc/stat).

The ramp stops at the first count where a publisher fell behind, one
exited, the server reported a stream that is not live, or the machine was
at least ``--max-busy`` (95%) busy. The last count before it is the
maximum sustained. The publishers run on the same machine and take CPU
time of their own, which the per-stream figure leaves out but the
machine's busy share includes.
Usage:

    python bench/ingest.py [--max 40] [--step 4] [--window 10]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import harness

CLIP_SECONDS = 10
WIDTH, HEIGHT, KBPS = 1280, 720, 3000
REAL_TIME_SHARE = 0.97


class Push:
    """One looping ffmpeg publisher and the media time it reports."""

    def __init__(self, flv: Path, url: str) -> None:
        self.process = harness.start_looping_push(flv, url)
        # The latest out_time and the monotonic time its report arrived.
        # ffmpeg reports every 0.5 s, so rates use the arrival times.
        self.progress = (time.monotonic(), 0.0)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            name, _, value = line.decode(errors="replace").strip().partition("=")
            if name == "out_time_us" and value.isdigit():
                self.progress = (time.monotonic(), int(value) / 1_000_000)

    def stop(self) -> None:
        harness.stop_process(self.process, timeout=5)


def machine_busy_ticks() -> tuple[int, int]:
    """Return (busy, total) CPU ticks of the whole machine since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:11]]
    idle = fields[3] + fields[4]  # idle and iowait
    total = sum(fields[:8])  # guest time is already part of user time
    return total - idle, total


@dataclass
class Level:
    publishers: int
    server_cpu: float  # share of one core
    publishers_cpu: float  # share of one core, all publishers together
    machine_busy: float  # share of all cores
    slowest_media_share: float  # min over publishers of media time / wall time
    exited: int
    not_live: int
    max_busy: float  # machine busy share at which the CPU counts as full

    @property
    def sustained(self) -> bool:
        return (
            self.exited == 0
            and self.not_live == 0
            and self.slowest_media_share >= REAL_TIME_SHARE
            and self.machine_busy < self.max_busy
        )


@dataclass
class Ramp:
    name: str
    levels: list[Level] = field(default_factory=list)

    @property
    def max_sustained(self) -> Level | None:
        passing = None
        for level in self.levels:
            if not level.sustained:
                break
            passing = level
        return passing


def media_share(start: tuple[float, float], end: tuple[float, float]) -> float:
    """Return media seconds sent per wall second between two progress reports."""
    wall = end[0] - start[0]
    return (end[1] - start[1]) / wall if wall > 0 else 0.0


async def measure_level(
    pushes: list[Push],
    server_cpu: Callable[[], float],
    not_live: Callable[[int], Awaitable[int]],
    args: argparse.Namespace,
) -> Level:
    cpu_start = server_cpu()
    publisher_pids = [push.process.pid for push in pushes]
    publishers_start = sum(harness.cpu_seconds(pid) for pid in publisher_pids)
    busy_start, total_start = machine_busy_ticks()
    progress_start = [push.progress for push in pushes]
    wall_start = time.monotonic()
    await asyncio.sleep(args.window)
    elapsed = time.monotonic() - wall_start
    busy_end, total_end = machine_busy_ticks()
    publishers_end = sum(harness.cpu_seconds(pid) for pid in publisher_pids)
    shares = [
        media_share(start, push.progress)
        for push, start in zip(pushes, progress_start, strict=True)
    ]
    return Level(
        publishers=len(pushes),
        server_cpu=(server_cpu() - cpu_start) / elapsed,
        publishers_cpu=(publishers_end - publishers_start) / elapsed,
        machine_busy=(busy_end - busy_start) / max(1, total_end - total_start),
        slowest_media_share=min(shares),
        exited=sum(push.process.poll() is not None for push in pushes),
        not_live=await not_live(len(pushes)),
        max_busy=args.max_busy,
    )


async def ramp(
    name: str,
    urls: list[str],
    flv: Path,
    server_cpu: Callable[[], float],
    not_live: Callable[[int], Awaitable[int]],
    args: argparse.Namespace,
) -> Ramp:
    """Add publishers until one count is not sustained or --max is reached."""
    result = Ramp(name)
    pushes: list[Push] = []
    try:
        for count in range(args.start, args.max + 1, args.step):
            while len(pushes) < count:
                pushes.append(Push(flv, urls[len(pushes)]))
            await asyncio.sleep(args.settle)
            level = await measure_level(pushes, server_cpu, not_live, args)
            result.levels.append(level)
            print_level(name, level, flush=True)
            if not level.sustained:
                break
    finally:
        for push in pushes:
            push.stop()
    return result


def print_level(name: str, level: Level, flush: bool = False) -> None:
    per_stream = 100 * level.server_cpu / level.publishers
    print(
        f"{name}: {level.publishers:3d} publishers,"
        f" server {100 * level.server_cpu:5.1f}% of a core"
        f" ({per_stream:4.2f}% per stream),"
        f" publishers {100 * level.publishers_cpu:5.1f}%,"
        f" machine {100 * level.machine_busy:5.1f}% busy,"
        f" slowest publisher at {level.slowest_media_share:.2f}x real time,"
        f" exited {level.exited}, not live {level.not_live}"
        f" -> {'sustained' if level.sustained else 'NOT sustained'}",
        flush=flush,
    )


async def box_not_live(box: harness.Box, streams: list[dict]) -> int:
    """Return how many of ``streams`` the box's status endpoint does not call live."""
    async with aiohttp.ClientSession() as session:
        headers = await harness.login(session, box.base_url, register=False)
        not_live = 0
        for stream in streams:
            url = f"{box.base_url}/api/streams/{stream['id']}/status"
            async with session.get(url, headers=headers) as response:
                status = (await response.json()).get("status")
            not_live += status != "live"
        return not_live


def nginx_not_live(hls_dir: Path, names: list[str]) -> int:
    """Return how many of ``names`` have no playlist updated in the last 6 s.

    nginx-rtmp rewrites a stream's playlist at each new 2 s fragment.
    """
    not_live = 0
    for name in names:
        try:
            age = time.time() - (hls_dir / f"{name}.m3u8").stat().st_mtime
        except FileNotFoundError:
            age = float("inf")
        not_live += age > 6
    return not_live


async def run(args: argparse.Namespace) -> list[Ramp]:
    work = Path(tempfile.mkdtemp(prefix="realcast-bench-ingest-"))
    box = nginx = None
    try:
        flv = work / "720p30-3mbps.flv"
        print(f"encoding the {CLIP_SECONDS} s input clip", flush=True)
        harness.make_flv(flv, CLIP_SECONDS, WIDTH, HEIGHT, KBPS)
        box = harness.start_box(work)
        nginx = harness.start_nginx(work)
        async with asyncio.timeout(args.limit):
            return await run_ramps(box, nginx, flv, args)
    except TimeoutError:
        raise SystemExit(f"the benchmark ran past --limit {args.limit:g} s") from None
    finally:
        for server in (box, nginx):
            if server is not None:
                harness.stop_process(server.process)
        harness.remove_tree(work)


async def run_ramps(
    box: harness.Box, nginx: harness.Nginx, flv: Path, args: argparse.Namespace
) -> list[Ramp]:
    streams = await harness.box_streams(box, args.max)
    await harness.wait_nginx(nginx)

    async def box_check(count: int) -> int:
        return await box_not_live(box, streams[:count])

    def box_cpu() -> float:
        return harness.cpu_seconds(box.process.pid)

    urls = [harness.box_rtmp_url(box, stream) for stream in streams]
    box_ramp = await ramp("box", urls, flv, box_cpu, box_check, args)

    names = [f"s{index}" for index in range(args.max)]

    async def nginx_check(count: int) -> int:
        return nginx_not_live(nginx.prefix / "hls", names[:count])

    urls = [nginx.rtmp_url(name) for name in names]
    nginx_ramp = await ramp(
        "nginx-rtmp", urls, flv, nginx.cpu_seconds, nginx_check, args
    )
    return [box_ramp, nginx_ramp]


def ratio_text(numerator: float, denominator: float) -> str:
    # /proc counts CPU time in clock ticks (usually 10 ms), so a short window can
    # read zero for a nearly idle server.
    return f"{numerator / denominator:.2f}" if denominator > 0 else "n/a (0 CPU time)"


def print_summary(ramps: list[Ramp], nginx_version: str, args) -> None:
    print(harness.machine_line())
    print(f"peer: {nginx_version}, libnginx-mod-rtmp, hls on, hls_fragment 2s")
    print(
        f"publishers: ffmpeg -re -stream_loop -1 -c copy of {WIDTH}x{HEIGHT}"
        f" 30 fps H.264 at {KBPS} kbit/s and AAC at 128 kbit/s"
    )
    print(
        "CPU per stream counts only the server process; the publishers run on"
        " the same machine and their CPU time is printed apart"
    )
    best = {}
    for result in ramps:
        level = result.max_sustained
        best[result.name] = level
        if level is None:
            print(f"{result.name}: not even {args.start} publishers were sustained")
            continue
        print(
            f"{result.name}: max sustained {level.publishers} publishers"
            f" (tried up to {result.levels[-1].publishers}),"
            f" {100 * level.server_cpu / level.publishers:.2f}% of a core per stream"
        )
    box, nginx = best.get("box"), best.get("nginx-rtmp")
    if box is not None and nginx is not None:
        ratio = ratio_text(
            box.server_cpu / box.publishers, nginx.server_cpu / nginx.publishers
        )
        print(
            "CPU per stream ratio, box / nginx-rtmp, each at its max sustained"
            f" count: {ratio}"
        )
    # The same count on both sides compares CPU per stream at equal load.
    common = {level.publishers: level for level in ramps[0].levels if level.sustained}
    for level in ramps[1].levels:
        if level.sustained and level.publishers in common:
            box_level = common[level.publishers]
            ratio = ratio_text(box_level.server_cpu, level.server_cpu)
            print(
                f"  at {level.publishers} publishers: box"
                f" {100 * box_level.server_cpu:.1f}% vs nginx-rtmp"
                f" {100 * level.server_cpu:.1f}% of a core, ratio {ratio}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=int, default=4, help="first publisher count")
    parser.add_argument("--step", type=int, default=4, help="publishers added per step")
    parser.add_argument("--max", type=int, default=40, help="last publisher count")
    parser.add_argument(
        "--settle", type=float, default=4.0, help="seconds before each measurement"
    )
    parser.add_argument(
        "--window", type=float, default=10.0, help="seconds of each measurement"
    )
    parser.add_argument(
        "--max-busy",
        type=float,
        default=0.95,
        help="share of all CPUs (0 to 1) busy at which the machine counts as full;"
        " above 1 turns that check off, for runs on a shared machine",
    )
    parser.add_argument(
        "--limit",
        type=float,
        help="seconds after which the run stops (default: enough for both ramps)",
    )
    args = parser.parse_args()

    if args.start < 1 or args.step < 1 or args.max < args.start:
        parser.error("expected 1 <= --start <= --max and --step >= 1")
    if args.limit is None:
        steps = (args.max - args.start) // args.step + 1
        args.limit = 2 * steps * (args.settle + args.window + 10) + 300

    nginx_version = harness.ensure_nginx_rtmp()
    ramps = asyncio.run(run(args))
    print_summary(ramps, nginx_version, args)


if __name__ == "__main__":
    main()
