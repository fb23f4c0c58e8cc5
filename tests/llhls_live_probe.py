"""Follow a live stream's low-latency playlists and print the rules they break.

    python tests/llhls_live_probe.py http://127.0.0.1:PORT STREAM_ID --seconds 20

Each rendition of the multivariant playlist is reloaded with ``_HLS_msn``
and ``_HLS_part`` set to its preload hint, as a low-latency player does.
Every version is checked for parts longer than PART-TARGET, a PART-HOLD-BACK
under three part targets, a segment that rounds above EXT-X-TARGETDURATION,
tags that change within the session and a media sequence number that goes
back, as RFC 8216bis states them. Exit code 1 when a rule is broken, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from llhls_check import Playlist, constant_tags, parse_playlist

HINT_POSITION = re.compile(r"part-(\d+)\.(\d+)\.m4s")
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=20)
# Slack for durations printed with 5 decimals.
DURATION_SLACK = 1e-6


def broken_rules(
    rendition: str, playlist: Playlist, previous: Playlist | None
) -> set[str]:
    """Return one line per rule that ``playlist`` breaks."""
    problems = set()
    part_target = playlist.part_target
    for part in playlist.parts:
        if part.duration > part_target + DURATION_SLACK:
            problems.add(
                f"{rendition}: part {part.name} lasts {part.duration} s,"
                f" more than PART-TARGET {part_target}"
            )
    hold_back = float(playlist.server_control["PART-HOLD-BACK"])
    if hold_back < 3 * part_target - DURATION_SLACK:
        problems.add(f"{rendition}: PART-HOLD-BACK {hold_back} < 3 x {part_target}")
    for segment in playlist.segments:
        if round(segment.duration) > playlist.target_duration:
            problems.add(
                f"{rendition}: segment {segment.msn} lasts {segment.duration} s,"
                f" above EXT-X-TARGETDURATION {playlist.target_duration}"
            )
    if previous is not None:
        if constant_tags(previous) != constant_tags(playlist):
            problems.add(
                f"{rendition}: tags changed from {constant_tags(previous)}"
                f" to {constant_tags(playlist)}"
            )
        if playlist.media_sequence < previous.media_sequence:
            problems.add(
                f"{rendition}: EXT-X-MEDIA-SEQUENCE went back from"
                f" {previous.media_sequence} to {playlist.media_sequence}"
            )
    return problems


async def follow(
    session: aiohttp.ClientSession, url: str, rendition: str, deadline: float
) -> set[str]:
    """Reload one media playlist at each preload hint until ``deadline``."""
    problems: set[str] = set()
    previous = None
    query = ""
    while time.monotonic() < deadline:
        async with session.get(url + query, timeout=REQUEST_TIMEOUT) as response:
            text = await response.text()
        if response.status != 200:
            problems.add(f"{rendition}: status {response.status}: {text[:120]}")
            await asyncio.sleep(0.3)
            continue
        playlist = parse_playlist(text)
        problems |= broken_rules(rendition, playlist, previous)
        previous = playlist
        if playlist.ended or playlist.preload_hint is None:
            break
        position = HINT_POSITION.search(playlist.preload_hint["URI"])
        separator = "&" if "?" in url else "?"
        query = f"{separator}_HLS_msn={position.group(1)}&_HLS_part={position.group(2)}"
    return problems


async def probe(base: str, stream_id: str, seconds: float) -> set[str]:
    async with aiohttp.ClientSession() as session:
        multivariant_url = f"{base}/hls/{stream_id}/index.m3u8"
        async with session.get(multivariant_url, timeout=REQUEST_TIMEOUT) as response:
            text = await response.text()
            if response.status != 200:
                return {
                    f"multivariant playlist: status {response.status}: {text[:120]}"
                }
        uris = [line for line in text.splitlines() if line and not line.startswith("#")]
        deadline = time.monotonic() + seconds
        results = await asyncio.gather(
            *(
                follow(
                    session,
                    f"{base}/hls/{stream_id}/{uri}",
                    uri.split("/")[0],
                    deadline,
                )
                for uri in uris
            )
        )
    return set().union(*results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "base", help="base URL of the box, such as http://127.0.0.1:8080"
    )
    parser.add_argument("stream_id")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="how long to follow, in seconds"
    )
    args = parser.parse_args()
    problems = asyncio.run(probe(args.base.rstrip("/"), args.stream_id, args.seconds))
    for line in sorted(problems):
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
