"""HLS test player: PyAV (FFmpeg's HLS demuxer) reading a URL to its end.

Run as a child process, so that FFmpeg's blocking network reads never stall
the server that runs in the test's own event loop.

    python tests/hls_reader.py http://127.0.0.1:PORT/hls/STREAM/index.m3u8?token=T

Decodes every video frame and demuxes every audio packet, then prints one
JSON object with the counts, the codecs and the last video frame's time in
seconds. Exit code 0 on success, 3 when FFmpeg fails to open or read.
"""

from __future__ import annotations

import json
import sys

import av


def read(url: str) -> dict:
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
