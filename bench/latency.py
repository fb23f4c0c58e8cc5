"""Benchmark: HLS live-edge latency of the box against nginx-rtmp.

One run pushes the same real-time RTMP stream (bench/rtmp_publisher.py:
640x360 H.264 at 30 frames per second with a keyframe every 2 s, and AAC)
first to the box, then to nginx with its RTMP module (Debian's nginx and
libnginx-mod-rtmp, ``hls_fragment 2s``). The publisher stamps each frame
with the time since its first frame reached the socket, so the media it
has sent by time T ends at T - origin + one frame.

For each server it prints:

- the time from the first RTMP byte, and from the first keyframe, to the
  first playable media playlist (one that lists a segment or a part);
- the lag of the newest playable media behind the media the publisher has
  sent: the end of the newest listed segment (and, with low-latency HLS,
  part), from the sum of the EXTINF and part durations since the first
  one. The lag is sampled every 10 ms from the first playable playlist to
  the end of the push, and the median and p90 are printed.

Regular HLS is read by polling the media playlist every ``--poll`` seconds,
which adds on average half that interval to the lag of both servers. When
the box's playlist has EXT-X-PART and EXT-X-SERVER-CONTROL with
CAN-BLOCK-RELOAD=YES (low-latency HLS), the script requests each next part
with a blocking playlist reload (``_HLS_msn`` and ``_HLS_part``), and prints
the lag of the newest part as well as that of the newest whole segment
(what a player without low-latency support sees). Usage:

    python bench/latency.py [--seconds 30] [--low-latency]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import harness
from yarl import URL

PUBLISHER = Path(__file__).with_name("rtmp_publisher.py")
FPS = 30
SAMPLE_STEP = 0.01  # seconds between lag samples


@dataclass
class MediaPlaylist:
    """Fields of a media playlist (RFC 8216bis) that the benchmark reads."""

    media_sequence: int
    segments: list[float]  # EXTINF durations, in order
    trailing_parts: list[float]  # durations of the parts after the last segment
    can_block_reload: bool
    target_duration: float

    @property
    def next_part(self) -> tuple[int, int]:
        """Return (_HLS_msn, _HLS_part) of the part after the newest one."""
        return self.media_sequence + len(self.segments), len(self.trailing_parts)


def parse_media_playlist(text: str) -> MediaPlaylist:
    playlist = MediaPlaylist(0, [], [], False, 2.0)
    pending: float | None = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            playlist.media_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            playlist.target_duration = float(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-SERVER-CONTROL:"):
            playlist.can_block_reload = "CAN-BLOCK-RELOAD=YES" in line
        elif line.startswith("#EXTINF:"):
            pending = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line.startswith("#EXT-X-PART:"):
            attributes = line.split(":", 1)[1]
            for attribute in attributes.split(","):
                name, _, value = attribute.partition("=")
                if name == "DURATION":
                    playlist.trailing_parts.append(float(value))
        elif line and not line.startswith("#") and pending is not None:
            playlist.segments.append(pending)
            playlist.trailing_parts = []
            pending = None
    return playlist


@dataclass
class Timeline:
    """Newest playable media over time, from successive playlists."""

    first_sequence: int | None = None
    durations: dict[int, float] = field(default_factory=dict)
    # (monotonic time, end of the newest segment, end of the newest part)
    steps: list[tuple[float, float, float]] = field(default_factory=list)
    low_latency: bool = False

    def add(self, at: float, playlist: MediaPlaylist) -> None:
        if not playlist.segments and not playlist.trailing_parts:
            return
        if playlist.trailing_parts:
            self.low_latency = True
        if self.first_sequence is None:
            self.first_sequence = playlist.media_sequence
        for offset, duration in enumerate(playlist.segments):
            self.durations[playlist.media_sequence + offset] = duration
        newest = playlist.media_sequence + len(playlist.segments)
        missing = set(range(self.first_sequence, newest)) - self.durations.keys()
        if missing:
            raise SystemExit(
                f"segments {sorted(missing)} left the playlist before the bench"
                " saw them; use a shorter --poll"
            )
        segments_end = sum(
            self.durations[sequence] for sequence in range(self.first_sequence, newest)
        )
        parts_end = segments_end + sum(playlist.trailing_parts)
        self.steps.append((at, segments_end, parts_end))

    def lags(self, origin: float, until: float, parts: bool) -> list[float]:
        """Sample the lag behind the publisher every SAMPLE_STEP seconds."""
        samples = []
        index = 0
        at = self.steps[0][0]
        while at < until:
            while index + 1 < len(self.steps) and self.steps[index + 1][0] <= at:
                index += 1
            _, segments_end, parts_end = self.steps[index]
            sent_end = at - origin + 1 / FPS
            samples.append(sent_end - (parts_end if parts else segments_end))
            at += SAMPLE_STEP
        return samples


@dataclass
class Result:
    name: str
    first_playable_after_connect: float
    first_playable_after_keyframe: float
    segment_lags: list[float]
    part_lags: list[float] | None


class Publisher:
    """bench/rtmp_publisher.py as a child process, and the times it reports."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: dict[str, dict] = {}
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, seconds: float) -> Publisher:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(PUBLISHER), url,
            "--seconds", f"{seconds:g}", "--fps", str(FPS), "--gop", str(2 * FPS),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process)

    async def _read(self) -> None:
        async for line in self.process.stdout:
            event = json.loads(line)
            self.events[event["event"]] = event
            self.changed.set()

    async def wait_for(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while event not in self.events:
            if self.process.returncode is not None or self.reader.done():
                raise SystemExit(f"the publisher exited before {event!r}")
            self.changed.clear()
            try:
                await asyncio.wait_for(
                    self.changed.wait(), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                raise SystemExit(f"the publisher sent no {event!r} in time") from None
        return self.events[event]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.reader.cancel()


async def fetch_text(
    session: aiohttp.ClientSession, url: URL, timeout: float
) -> str | None:
    """GET ``url``; return the body, or None for a 404 (not live yet)."""
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with session.get(url, timeout=client_timeout) as response:
        if response.status == 404:
            return None
        if response.status != 200:
            raise SystemExit(f"GET {url} returned {response.status}")
        return await response.text()


async def find_media_playlist(
    session: aiohttp.ClientSession, url: URL, multivariant: bool
) -> URL | None:
    if not multivariant:
        return url
    text = await fetch_text(session, url, 5)
    if text is None:
        return None
    for line in text.splitlines():
        if line and not line.startswith("#"):
            return url.join(URL(line))
    return None


async def measure(
    name: str,
    rtmp_url: str,
    playlist_url: URL,
    *,
    multivariant: bool,
    args: argparse.Namespace,
) -> Result:
    """Push to one server and follow its playlist until the push ends."""
    publisher = await Publisher.start(rtmp_url, args.seconds)
    timeline = Timeline()
    try:
        async with aiohttp.ClientSession() as session:
            connect = (await publisher.wait_for("connect", 30))["at"]
            origin = (await publisher.wait_for("origin", 30))["at"]
            end = origin + args.seconds - 0.2
            media_url = None
            first_playable = None
            playlist = None
            while time.monotonic() < end:
                if media_url is None:
                    media_url = await find_media_playlist(
                        session, playlist_url, multivariant
                    )
                    if media_url is None:
                        await asyncio.sleep(args.poll)
                        continue
                request_url = media_url
                blocking = playlist is not None and playlist.can_block_reload
                if blocking:
                    msn, part = playlist.next_part
                    query = {"_HLS_msn": str(msn), "_HLS_part": str(part)}
                    request_url = media_url.update_query(query)
                timeout = 3 * (playlist.target_duration if playlist else 2.0) + 1
                text = await fetch_text(session, request_url, timeout)
                at = time.monotonic()
                if text is not None:
                    playlist = parse_media_playlist(text)
                    timeline.add(at, playlist)
                    if first_playable is None and timeline.steps:
                        first_playable = at
                if not blocking:
                    await asyncio.sleep(args.poll)
    finally:
        await publisher.stop()

    if first_playable is None:
        raise SystemExit(f"{name}: no playable playlist within the push")
    if args.low_latency and name == "box" and not timeline.low_latency:
        raise SystemExit(
            "--low-latency: the box's media playlist has no EXT-X-PART lines,"
            " so it does not serve low-latency HLS"
        )
    keyframe = (await publisher.wait_for("first_keyframe", 1))["at"]
    return Result(
        name,
        first_playable - connect,
        first_playable - keyframe,
        timeline.lags(origin, end, parts=False),
        timeline.lags(origin, end, parts=True) if timeline.low_latency else None,
    )


def print_result(result: Result) -> None:
    print(
        f"{result.name}: first playable playlist"
        f" {result.first_playable_after_connect:.2f} s after the first RTMP byte,"
        f" {result.first_playable_after_keyframe:.2f} s after the first keyframe"
    )
    rows = [("newest segment", result.segment_lags)]
    if result.part_lags is not None:
        rows.append(("newest part", result.part_lags))
    for label, lags in rows:
        print(
            f"  lag of the {label} behind the publisher: median"
            f" {statistics.median(lags):.2f} s, p90 {harness.percentile(lags, 0.9):.2f}"
            f" s, min {min(lags):.2f} s, max {max(lags):.2f} s ({len(lags)} samples)"
        )


async def run(args: argparse.Namespace) -> None:
    nginx_version = harness.ensure_nginx_rtmp()
    work = Path(tempfile.mkdtemp(prefix="realcast-bench-latency-"))
    box = harness.start_box(work, **dict(args.box_env))
    nginx = harness.start_nginx(work)
    try:
        async with asyncio.timeout(args.limit):
            streams = await harness.box_streams(box, 1)
            await harness.wait_nginx(nginx)
            box_result = await measure(
                "box",
                harness.box_rtmp_url(box, streams[0]),
                URL(harness.box_hls_url(box, streams[0])),
                multivariant=True,
                args=args,
            )
            nginx_result = await measure(
                "nginx-rtmp",
                nginx.rtmp_url("bench"),
                URL(nginx.hls_url("bench")),
                multivariant=False,
                args=args,
            )
    except TimeoutError:
        raise SystemExit(f"the benchmark ran past --limit {args.limit:g} s") from None
    finally:
        harness.stop_process(box.process)
        harness.stop_process(nginx.process)
        harness.remove_tree(work)

    print(harness.machine_line())
    print(f"peer: {nginx_version}, libnginx-mod-rtmp, hls_fragment 2s")
    print(f"push: {args.seconds:g} s of 640x360 at {FPS} fps, keyframe every 2 s")
    print(f"playlist polling every {args.poll:g} s where there is no blocking reload")
    print_result(box_result)
    print_result(nginx_result)
    box_lag = statistics.median(box_result.segment_lags)
    nginx_lag = statistics.median(nginx_result.segment_lags)
    ratio = nginx_lag / box_lag
    print(f"median lag ratio, newest segment, nginx-rtmp / box: {ratio:.2f}")
    if box_result.part_lags is not None:
        part_lag = statistics.median(box_result.part_lags)
        ratio = nginx_lag / part_lag
        print(f"median lag ratio, nginx-rtmp segment / box part: {ratio:.2f}")
    first_ratio = (
        nginx_result.first_playable_after_keyframe
        / box_result.first_playable_after_keyframe
    )
    print(f"first playable ratio, nginx-rtmp / box: {first_ratio:.2f}")


def parse_setting(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name.startswith("REALCAST_"):
        raise argparse.ArgumentTypeError(
            f"invalid --box-env {text!r}: expected REALCAST_NAME=VALUE"
        )
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="length of each push, in seconds"
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=0.05,
        help="seconds between playlist requests without blocking reload",
    )
    parser.add_argument(
        "--low-latency",
        action="store_true",
        help="fail unless the box serves low-latency HLS (EXT-X-PART)",
    )
    parser.add_argument(
        "--box-env",
        type=parse_setting,
        action="append",
        default=[],
        metavar="REALCAST_NAME=VALUE",
        help="setting for the box, as an environment variable (repeatable)",
    )
    parser.add_argument(
        "--limit",
        type=float,
        help="seconds after which the run stops (default: 3 x --seconds + 120)",
    )
    args = parser.parse_args()
    if args.limit is None:
        args.limit = 3 * args.seconds + 120
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
