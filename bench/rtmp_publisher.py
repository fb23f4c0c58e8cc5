"""Real-time RTMP publisher whose timestamps follow the clock, for bench/latency.py.

Encodes generated video (libx264, tune zerolatency) and an AAC tone with
PyAV and pushes them as FLV over RTMP. Each video frame's timestamp is the
time since ``origin`` on CLOCK_MONOTONIC, rounded to a frame, so the media
the publisher has sent by monotonic time T ends at T - origin. Linux shares
CLOCK_MONOTONIC between processes, so the parent can compare it with its
own ``time.monotonic()``.

Prints one JSON object per line on stdout:

- ``{"event": "connect", "at": T}`` just before the TCP connection opens
  (the first RTMP byte follows at once);
- ``{"event": "origin", "at": T}``: monotonic time of media time 0, when
  the first video packet (a keyframe) was written to the socket;
- ``{"event": "first_keyframe", "at": T}``: the same time;
- ``{"event": "done", "video": N, "audio": M}`` at the end.

Runs as a child process because PyAV holds the GIL during network writes.

    python bench/rtmp_publisher.py rtmp://127.0.0.1:PORT/live/KEY --seconds 20
"""

from __future__ import annotations

import argparse
import fractions
import json
import sys
import time

import av
import numpy as np
from av.video.frame import PictureType

SAMPLE_RATE = 48000
AUDIO_FRAME_SAMPLES = 1024
# The muxer interleaves by timestamp and keeps a video packet until an audio
# packet at least as late is written. The AAC encoder returns packets about
# two frames (43 ms) after their input, so audio is encoded this far ahead
# of the video to let each video packet out at once.
AUDIO_LEAD_SECONDS = 0.1


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def make_frames(count: int, width: int, height: int) -> list[av.VideoFrame]:
    """Return ``count`` distinct frames to cycle through (cheaper than drawing)."""
    frames = []
    gradient = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    for index in range(count):
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[:, :, 0] = (index * 9) % 256
        image[:, :, 1] = np.roll(gradient, index * 8, axis=1)
        top = (index * 7) % max(1, height - height // 4)
        image[top : top + height // 4, : width // 4, 2] = 255
        frames.append(
            av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        )
    return frames


def audio_frame(index: int) -> av.AudioFrame:
    start = index * AUDIO_FRAME_SAMPLES
    t = np.arange(start, start + AUDIO_FRAME_SAMPLES) / SAMPLE_RATE
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(
        np.stack([tone, tone]), format="fltp", layout="stereo"
    )
    frame.sample_rate = SAMPLE_RATE
    frame.pts = start
    frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
    return frame


def publish(args: argparse.Namespace) -> tuple[int, int]:
    emit("connect", at=time.monotonic())
    # flush_packets writes each packet to the socket at once instead of
    # when the 32 KiB I/O buffer fills.
    output = av.open(
        args.url, "w", format="flv", container_options={"flush_packets": "1"}
    )
    video = output.add_stream(
        "libx264",
        rate=args.fps,
        options={
            "preset": "ultrafast",
            "tune": "zerolatency",
            "g": str(args.gop),
            "keyint_min": str(args.gop),
            "sc_threshold": "0",
            "bf": "0",
        },
    )
    video.width, video.height, video.pix_fmt = args.width, args.height, "yuv420p"
    video.bit_rate = args.kbps * 1000
    audio = None
    if args.audio:
        audio = output.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "stereo"
        audio.bit_rate = 128_000

    frames = make_frames(args.fps, args.width, args.height)
    frame_seconds = 1 / args.fps
    origin = None
    video_count = audio_count = 0
    pts = last_pts = 0
    while origin is None or time.monotonic() - origin < args.seconds:
        frame = frames[video_count % len(frames)]
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, args.fps)
        # Keyframes every --gop frames of media time, also when the
        # publisher fell behind and skipped frame times.
        first_of_gop = video_count == 0 or pts // args.gop > last_pts // args.gop
        frame.pict_type = PictureType.I if first_of_gop else PictureType.NONE
        for packet in video.encode(frame):
            output.mux(packet)
        if origin is None:
            # Media time 0 is when the first frame reached the socket, so
            # the encoder's start-up time does not count as lag.
            origin = time.monotonic()
            emit("origin", at=origin)
            emit("first_keyframe", at=origin)
        video_count += 1
        last_pts = pts
        media_end = (pts + 1) * frame_seconds
        audio_end = (media_end + AUDIO_LEAD_SECONDS) * SAMPLE_RATE
        while audio is not None and audio_count * AUDIO_FRAME_SAMPLES < audio_end:
            for packet in audio.encode(audio_frame(audio_count)):
                output.mux(packet)
            audio_count += 1
        delay = origin + media_end - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        # The timestamp is the clock, so a publisher that falls behind skips
        # frame times instead of drifting away from real time.
        pts = max(pts + 1, round((time.monotonic() - origin) * args.fps))

    for stream in (video, audio):
        if stream is not None:
            for packet in stream.encode(None):
                output.mux(packet)
    output.close()
    return video_count, audio_count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="rtmp:// URL including the stream key")
    parser.add_argument("--seconds", type=float, default=20.0, help="media length")
    parser.add_argument("--fps", type=int, default=30, help="frames per second")
    parser.add_argument(
        "--gop", type=int, default=60, help="frames from one keyframe to the next"
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--kbps", type=int, default=1500, help="video bit rate")
    parser.add_argument("--no-audio", dest="audio", action="store_false")
    args = parser.parse_args()
    try:
        video_count, audio_count = publish(args)
    except (av.FFmpegError, OSError) as exc:
        print(f"publish to {args.url} failed: {exc}", file=sys.stderr)
        return 3
    emit("done", video=video_count, audio=audio_count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
