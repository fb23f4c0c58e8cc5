"""Benchmark: authenticated REST API requests per second and latency of the box.

Starts the box, registers a user, creates an app and ``--streams`` streams,
then runs each scenario for ``--seconds`` with ``--concurrency`` clients
that send requests back to back, each with the user's Bearer access token:

- ``list``: GET /api/streams (the first page);
- ``get``: GET /api/streams/{id}, cycling through the streams;
- ``create-delete``: POST /api/streams, then DELETE /api/streams/{id} of
  the stream just created.

There is no peer because no other server implements this API. The box
runs with its API rate limits at their maximum values: 1,000,000 requests
a minute and 10,000,000 an hour per identity, for all requests and for
stream operations. That is far above what the run sends, so the figures
measure the server and not the limiter. The shipped defaults are 60
requests and 10 stream operations a minute.
The clients run in ``--processes`` processes on the same machine and take
CPU time from the server; the script prints the server's CPU share.
Usage:

    python bench/api.py [--concurrency 32] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import harness

SCENARIOS = ("list", "get", "create-delete")
REQUEST_TIMEOUT = 30.0


@dataclass
class Tally:
    """Latency in seconds of each successful request, by method and route."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Tally) -> None:
        for name, values in other.seconds.items():
            self.seconds.setdefault(name, []).extend(values)
        for name, count in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + count


async def timed(
    session: aiohttp.ClientSession,
    tally: Tally,
    label: str,
    method: str,
    url: str,
    expected: int,
    **options: object,
) -> dict | None:
    started = time.perf_counter()
    try:
        async with session.request(method, url, **options) as response:
            body = await response.read()
            ok = response.status == expected
    except (aiohttp.ClientError, TimeoutError):
        ok, body = False, b""
    elapsed = time.perf_counter() - started
    if not ok:
        tally.errors[label] = tally.errors.get(label, 0) + 1
        return None
    tally.seconds.setdefault(label, []).append(elapsed)
    return body


async def worker(
    session: aiohttp.ClientSession,
    scenario: str,
    context: dict,
    offset: int,
    until: float,
    tally: Tally,
) -> None:
    base = context["base_url"]
    stream_ids = context["stream_ids"]
    turn = offset
    while time.monotonic() < until:
        if scenario == "list":
            await timed(
                session, tally, "GET /api/streams", "GET", f"{base}/api/streams", 200
            )
        elif scenario == "get":
            stream_id = stream_ids[turn % len(stream_ids)]
            url = f"{base}/api/streams/{stream_id}"
            await timed(session, tally, "GET /api/streams/{id}", "GET", url, 200)
        else:
            body = {"app_id": context["app_id"], "title": f"Bench {turn}"}
            created = await timed(
                session, tally, "POST /api/streams", "POST",
                f"{base}/api/streams", 201, json=body,
            )  # fmt: skip
            if created is not None:
                stream_id = json.loads(created)["id"]
                url = f"{base}/api/streams/{stream_id}"
                await timed(
                    session, tally, "DELETE /api/streams/{id}", "DELETE", url, 204
                )
        turn += 1


async def client_process_main(
    scenario: str, context: dict, workers: int, first: int, seconds: float
) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=context["headers"]
    ) as session:
        await asyncio.gather(
            *(
                worker(session, scenario, context, first + index, until, tally)
                for index in range(workers)
            )
        )
    return tally


def client_process(
    scenario: str, context: dict, workers: int, first: int, seconds: float
) -> Tally:
    return asyncio.run(client_process_main(scenario, context, workers, first, seconds))


@dataclass
class Scenario:
    name: str
    seconds: float
    tally: Tally
    server_cpu: float  # share of one core


def run_scenario(
    scenario: str, context: dict, server_pid: int, args: argparse.Namespace
) -> Scenario:
    shares = [args.concurrency // args.processes] * args.processes
    for index in range(args.concurrency % args.processes):
        shares[index] += 1
    cpu_start = harness.cpu_seconds(server_pid)
    started = time.monotonic()
    tally = Tally()
    with concurrent.futures.ProcessPoolExecutor(args.processes) as pool:
        futures = []
        first = 0
        for share in shares:
            futures.append(
                pool.submit(
                    client_process, scenario, context, share, first, args.seconds
                )
            )
            first += share
        for future in futures:
            tally.merge(future.result(timeout=args.seconds + 2 * REQUEST_TIMEOUT))
    elapsed = time.monotonic() - started
    cpu = (harness.cpu_seconds(server_pid) - cpu_start) / elapsed
    return Scenario(scenario, args.seconds, tally, cpu)


def print_scenario(result: Scenario) -> None:
    total = sum(len(values) for values in result.tally.seconds.values())
    errors = sum(result.tally.errors.values())
    print(
        f"{result.name}: {total / result.seconds:.0f} requests/s in all,"
        f" server {100 * result.server_cpu:.0f}% of a core, {errors} errors"
    )
    for label, values in result.tally.seconds.items():
        milliseconds = [1000 * value for value in values]
        print(
            f"  {label}: {len(values) / result.seconds:.0f} requests/s,"
            f" p50 {statistics.median(milliseconds):.1f} ms,"
            f" p99 {harness.percentile(milliseconds, 0.99):.1f} ms,"
            f" errors {result.tally.errors.get(label, 0)}"
        )


async def prepare(box: harness.Box, count: int) -> dict:
    async with aiohttp.ClientSession() as session:
        await harness.wait_http(session, f"{box.base_url}/healthz", 60)
        headers = await harness.login(session, box.base_url)
        app_id = await harness.create_app(session, box.base_url, headers)
        stream_ids = [
            (
                await harness.create_stream(
                    session, box.base_url, headers, app_id, f"Bench {index}"
                )
            )["id"]
            for index in range(count)
        ]
    return {
        "base_url": box.base_url,
        "headers": headers,
        "app_id": app_id,
        "stream_ids": stream_ids,
    }


def run(args: argparse.Namespace) -> list[Scenario]:
    work = Path(tempfile.mkdtemp(prefix="realcast-bench-api-"))
    box = harness.start_box(work)
    try:
        context = asyncio.run(prepare(box, args.streams))
        return [
            run_scenario(scenario, context, box.process.pid, args)
            for scenario in args.scenarios
        ]
    finally:
        harness.stop_process(box.process)
        harness.remove_tree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency", type=int, default=32, help="clients sending at once"
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="seconds per scenario"
    )
    parser.add_argument(
        "--streams", type=int, default=50, help="streams created before the run"
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="client processes for the clients"
    )
    parser.add_argument(
        "--scenario",
        dest="scenarios",
        action="append",
        choices=SCENARIOS,
        help="scenario to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--limit",
        type=float,
        help="seconds after which the run stops"
        " (default: 60 + (--seconds + 60) per scenario)",
    )
    args = parser.parse_args()
    if args.concurrency < 1 or args.processes < 1 or args.streams < 1:
        parser.error("--concurrency, --processes and --streams must be at least 1")
    args.processes = min(args.processes, args.concurrency)
    args.scenarios = args.scenarios or list(SCENARIOS)
    if args.limit is None:
        args.limit = 60 + (args.seconds + 60) * len(args.scenarios)
    harness.set_time_limit(args.limit)
    results = run(args)

    print(harness.machine_line())
    print(
        f"box only, no peer; {args.concurrency} clients in {args.processes}"
        f" processes, {args.seconds:g} s per scenario, {args.streams} streams;"
        " API rate limits raised to 1,000,000 a minute"
    )
    for result in results:
        print_scenario(result)


if __name__ == "__main__":
    main()
