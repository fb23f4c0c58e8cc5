"""Benchmark: CPU cost of players blocked on a low-latency HLS playlist reload.

A low-latency player asks for the next part before it exists
(``_HLS_msn``/``_HLS_part``), and the box keeps the request open until the
packager writes that part. This script measures what such waiting costs:

- It starts the box (``python -m realcast_box serve``) and pushes a looping
  640x360, 1 Mbit/s H.264 and AAC clip to it with the ffmpeg CLI, without
  re-encoding, so the box packages low-latency HLS (on by default).
- Baseline: the box's CPU time over ``--window`` seconds with no viewer.
- Each of ``--rounds`` rounds opens ``--waiters`` connections. Each sends
  one blocking reload for part 0 of the segment two after the newest one
  (the furthest a request may ask for). With 2 s segments that part comes
  2 to 4 s later. Once the requests are sent, the script measures the
  box's CPU over ``--window`` seconds while they wait. The round fails if
  any request got its response during the window. Then it waits for every
  response and prints how long the box took from the first of them to the
  last, and whether each playlist lists the requested part.

The peer here is the limit: the same box with no viewers. The printed
ratio is the box's CPU with the waiters over the baseline, and the extra
CPU is the cost of the waiting requests (connection setup is outside the
window). The clients run on the same machine in this process. Usage:

    python bench/llhls_waiters.py [--waiters 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import harness
from yarl import URL

CLIP_SECONDS = 10
WIDTH, HEIGHT, KBPS = 640, 360, 1000
# Seconds after sending the requests before the window opens, for the box to
# read them all.
SETTLE_SECONDS = 0.5
LAST_PART = re.compile(r'^#EXT-X-PART:.*URI="part-([0-9]+)\.([0-9]+)\.m4s', re.M)


def cpu_seconds(pid: int) -> float:
    """Return the CPU time of every thread of ``pid``, to the nanosecond.

    /proc/PID/stat counts in clock ticks (10 ms), too coarse for windows of
    a second on a box that uses about 1% of a core. The first field of each
    thread's schedstat is its time on a CPU in nanoseconds.
    """
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def newest_part(text: str) -> tuple[int, int] | None:
    """Return (segment, part) of the newest part a media playlist lists."""
    found = LAST_PART.findall(text)
    if not found:
        return None
    segment, part = found[-1]
    return int(segment), int(part)


async def media_url(session: aiohttp.ClientSession, url: str, limit: float) -> URL:
    """Wait until the stream's media playlist lists parts; return its URL."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        async with session.get(url) as response:
            if response.status == 200:
                text = await response.text()
                uri = next(line for line in text.splitlines() if line[:1] != "#")
                media = URL(url).join(URL(uri))
                async with session.get(media) as reply:
                    if reply.status == 200 and newest_part(await reply.text()):
                        return media
        await asyncio.sleep(0.2)
    raise SystemExit(
        f"no media playlist with parts within {limit:.0f} s: check that"
        " REALCAST_HLS_LOW_LATENCY is not false and that ffmpeg can push"
    )


async def blocked_request(
    session: aiohttp.ClientSession, url: URL, target: tuple[int, int]
) -> tuple[float, bool]:
    """Request the playlist that lists ``target``; return (arrival, listed)."""
    query = {"_HLS_msn": str(target[0]), "_HLS_part": str(target[1])}
    async with session.get(url.update_query(query)) as response:
        text = await response.text()
        arrived = time.monotonic()
        listed = response.status == 200 and f"part-{target[0]}.{target[1]}." in text
        return arrived, listed


async def round_trip(
    media: URL, box: harness.Box, waiters: int, window: float
) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.get(media) as response:
            newest = newest_part(await response.text())
        assert newest is not None
        target = (newest[0] + 2, 0)
        tasks = [
            asyncio.create_task(blocked_request(session, media, target))
            for _ in range(waiters)
        ]
        await asyncio.sleep(SETTLE_SECONDS)
        before = cpu_seconds(box.process.pid)
        started = time.monotonic()
        await asyncio.sleep(window)
        spent = cpu_seconds(box.process.pid) - before
        elapsed = time.monotonic() - started
        answered_early = sum(task.done() for task in tasks)
        results = await asyncio.gather(*tasks)
    arrivals = sorted(arrived for arrived, _ in results)
    return {
        "cpu": spent / elapsed,
        "answered_early": answered_early,
        "listed": sum(listed for _, listed in results),
        "spread": arrivals[-1] - arrivals[0],
    }


async def measure(args: argparse.Namespace, box: harness.Box, url: str) -> list:
    async with aiohttp.ClientSession() as session:
        media = await media_url(session, url, 60)
    # A few seconds of packaging before the baseline.
    await asyncio.sleep(2)
    before = cpu_seconds(box.process.pid)
    started = time.monotonic()
    await asyncio.sleep(args.window)
    baseline = (cpu_seconds(box.process.pid) - before) / (time.monotonic() - started)
    rounds = []
    for _ in range(args.rounds):
        rounds.append(await round_trip(media, box, args.waiters, args.window))
        await asyncio.sleep(1)
    return [baseline, rounds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=1000, help="blocked requests")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of waiters")
    parser.add_argument(
        "--window", type=float, default=1.0, help="seconds of each CPU measurement"
    )
    parser.add_argument(
        "--limit", type=float, default=180, help="seconds after which the run stops"
    )
    args = parser.parse_args()
    if not 1 <= args.waiters <= 5000:
        parser.error("--waiters must be from 1 to 5000")
    if not 0.2 <= args.window <= 1.4:
        parser.error(
            "--window must be from 0.2 to 1.4 s, so that it ends before the"
            " requested part can exist (2 s segments)"
        )
    harness.set_time_limit(args.limit)

    work = Path(tempfile.mkdtemp(prefix="realcast-bench-waiters-"))
    box = push = None
    try:
        flv = work / "360p-1mbps.flv"
        print(f"encoding the {CLIP_SECONDS} s input clip", flush=True)
        harness.make_flv(flv, CLIP_SECONDS, WIDTH, HEIGHT, KBPS)
        box = harness.start_box(work)
        stream = asyncio.run(harness.box_streams(box, 1))[0]
        push = harness.start_looping_push(flv, harness.box_rtmp_url(box, stream))
        baseline, rounds = asyncio.run(
            measure(args, box, harness.box_hls_url(box, stream))
        )
    finally:
        for process in (push, box and box.process):
            if process is not None:
                harness.stop_process(process)
        harness.remove_tree(work)

    print(harness.machine_line())
    print(
        f"publisher: ffmpeg -re -c copy of {WIDTH}x{HEIGHT} 30 fps H.264 at"
        f" {KBPS} kbit/s and AAC; low-latency HLS with the box's defaults"
    )
    print(f"baseline, no viewers: box {100 * baseline:.2f}% of a core")
    failed = False
    for index, result in enumerate(rounds, 1):
        extra = result["cpu"] - baseline
        print(
            f"round {index}: {args.waiters} blocked requests, box"
            f" {100 * result['cpu']:.2f}% of a core ({100 * extra:+.2f}),"
            f" answered during the window {result['answered_early']:.0f},"
            f" playlists listing the part {result['listed']:.0f}/{args.waiters},"
            f" first to last response {1000 * result['spread']:.0f} ms"
        )
        failed |= result["answered_early"] > 0 or result["listed"] < args.waiters
    cpu = statistics.median(result["cpu"] for result in rounds)
    print(
        f"median CPU with {args.waiters} waiting: {100 * cpu:.2f}% of a core,"
        f" {100 * (cpu - baseline):+.2f} over the baseline;"
        f" ratio waiting / baseline {cpu / max(baseline, 1e-9):.2f}"
    )
    if failed:
        sys.exit("some requests were answered early or missed their part")


if __name__ == "__main__":
    main()
