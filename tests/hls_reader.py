"""HLS test player: PyAV (FFmpeg's HLS demuxer) reading a URL to its end.

Run as a child process, so that FFmpeg's blocking network reads never stall
the server that runs in the test's own event loop.

    python tests/hls_reader.py http://127.0.0.1:PORT/hls/STREAM/index.m3u8?token=T

Waits until the first variant's media playlist lists a whole segment, as
an FFmpeg-based player must: with low-latency HLS the playlists appear at
the first partial segment, and FFmpeg's HLS demuxer (8.0) opens a media
playlist that lists parts but no segment as an input without streams.
Then decodes every video frame and demuxes every audio packet, and prints one JSON
object with the counts, the codecs and the last video frame's time in
seconds. Exit code 0 on success, 3 when FFmpeg fails to open or read.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin

import av

SEGMENT_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.1


def wait_for_segment(url: str, timeout: float = SEGMENT_WAIT_SECONDS) -> None:
    """Poll ``url`` until its (first variant's) media playlist lists a segment.

    Returns at once for a playlist that is not found or not allowed, so the
    player reports that error itself. Raises TimeoutError after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = _fetch(url)
        if text is None:
            return
        if "#EXT-X-STREAM-INF" in text:
            variant = next(
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.startswith("#")
            )
            text = _fetch(urljoin(url, variant))
            if text is None:
                return
        if "#EXTINF" in text:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no segment listed by {url.split('?')[0]}")
        time.sleep(POLL_SECONDS)


def _fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    except urllib.error.HTTPError:
        return None


def read(url: str) -> dict:
    wait_for_segment(url)
    # live_start_index 0 starts a live playlist at its first listed segment
    # instead of three from the end, so a player that opens early reads all.
    with av.open(url, options={"live_start_index": "0"}, timeout=20) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        result = {
            "video_codec": video.codec_context.name if video else None,
            "audio_codec": audio.codec_context.name if audio else None,
            "video_frames": 0,
            "audio_packets": 0,
            "first_video_time": None,
            "last_video_time": None,
            "width": video.codec_context.width if video else 0,
        }
        streams = [stream for stream in (video, audio) if stream is not None]
        for packet in container.demux(*streams):
            if packet.size == 0:
                continue
            if packet.stream is audio:
                result["audio_packets"] += 1
                continue
            _count_frames(result, packet.decode())
        if video is not None:
            # Flush the frames the decoder still holds.
            _count_frames(result, video.codec_context.decode(None))
    return result


def _count_frames(result: dict, frames: list) -> None:
    for frame in frames:
        seconds = float(frame.pts * frame.time_base)
        result["video_frames"] += 1
        if result["first_video_time"] is None:
            result["first_video_time"] = seconds
        result["last_video_time"] = seconds


def main() -> int:
    try:
        result = read(sys.argv[1])
    except av.FFmpegError as exc:
        print(f"failed to read {sys.argv[1].split('?')[0]}: {exc}")
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
