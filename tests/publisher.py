"""RTMP test publisher: PyAV (FFmpeg's own RTMP client) pushing generated media.

Run as a child process, because PyAV before 19 holds the GIL during network
writes and would stall a server running in the test's own process.

    python tests/publisher.py rtmp://127.0.0.1:PORT/live/KEY --seconds 4

Prints ``sent video=N audio=M`` on success. Exit code 0 on success, 3 when the
server refuses or drops the connection.
"""

from __future__ import annotations

import argparse
import fractions
import sys
import time

import av
import numpy as np


def _video_frame(index: int, width: int, height: int) -> av.VideoFrame:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, :, 0] = (index * 7) % 256
    image[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[: height // 4, : width // 4, 2] = 255 if index % 2 else 0
    return av.VideoFrame.from_ndarray(image, format="rgb24")


def _audio_frame(index: int, sample_rate: int, samples: int) -> av.AudioFrame:
    start = index * samples
    t = (np.arange(start, start + samples) / sample_rate).astype(np.float32)
    tone = 0.2 * np.sin(2 * np.pi * 440 * t)
    planes = np.stack([tone, tone]).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout="stereo")
    frame.sample_rate = sample_rate
    frame.pts = start
    frame.time_base = fractions.Fraction(1, sample_rate)
    return frame


def publish(args: argparse.Namespace) -> tuple[int, int]:
    output = av.open(args.url, "w", format="flv")
    video_count = audio_count = 0
    audio_stream = None
    if args.audio:
        audio_stream = output.add_stream("aac", rate=args.sample_rate)
        audio_stream.layout = "stereo"
        audio_stream.bit_rate = 96_000

    video_stream = None
    if args.video:
        video_stream = output.add_stream(
            "libx264",
            rate=args.fps,
            options={
                "g": str(args.gop),
                "bf": str(args.bframes),
                "preset": "ultrafast",
            },
        )
        video_stream.width = args.width
        video_stream.height = args.height
        video_stream.pix_fmt = "yuv420p"
        video_stream.bit_rate = 500_000

    frame_interval = 1 / args.fps
    audio_samples = 1024
    audio_time = 0.0
    media_time = 0.0
    wall_start = time.monotonic()
    if args.print_start:
        # Frame N is sent at this Unix time plus N / fps, or late if the
        # encoder falls behind, so tests can measure the lag behind it.
        print(f"start {time.time():.6f}", flush=True)
    total_frames = round(args.seconds * args.fps)
    for _ in range(total_frames):
        if video_stream is not None:
            frame = _video_frame(video_count, args.width, args.height)
            frame.pts = video_count
            frame.time_base = fractions.Fraction(1, args.fps)
            for packet in video_stream.encode(frame):
                output.mux(packet)
            video_count += 1
        media_time += frame_interval
        while audio_stream is not None and audio_time < media_time:
            frame = _audio_frame(audio_count, args.sample_rate, audio_samples)
            for packet in audio_stream.encode(frame):
                output.mux(packet)
            audio_count += 1
            audio_time = audio_count * audio_samples / args.sample_rate
        if args.realtime:
            delay = wall_start + media_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    for stream in (video_stream, audio_stream):
        if stream is not None:
            for packet in stream.encode(None):
                output.mux(packet)
    output.close()
    return video_count, audio_count


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=25)
    parser.add_argument("--bframes", type=int, default=0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--no-audio", dest="audio", action="store_false")
    parser.add_argument("--no-video", dest="video", action="store_false")
    parser.add_argument("--realtime", action="store_true")
    parser.add_argument("--print-start", action="store_true")
    args = parser.parse_args()
    try:
        video, audio = publish(args)
    except (av.FFmpegError, OSError) as exc:
        print(f"publish failed: {exc}", file=sys.stderr)
        return 3
    print(f"sent video={video} audio={audio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
