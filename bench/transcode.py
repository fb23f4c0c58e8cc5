"""Benchmark: the box's transcoding ladder against the ffmpeg CLI on the same input.

Both get the same FLV file (what OBS sends over RTMP: 1080p60 H.264 with
B-frames and AAC) and the same ladder: 720p60 at 3,500 kbps and 480p30 at
1,200 kbps, libx264 preset veryfast without B-frames, keyframes every 2 s,
AAC at 128 kbps, written as fMP4 HLS. The box runs its real pipeline
(source segmenter, decode thread, a thread per rendition, HLS packagers)
with waiting instead of dropping, so it runs as fast as it can.

Prints wall time, speed (media seconds per second) and peak memory of each,
and the speed ratio box / ffmpeg. Usage:

    python bench/transcode.py [--seconds 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realcast_box.hls.segmenter import Segmenter
from realcast_box.live.ladder import LiveLadder
from realcast_box.media.flv import parse_audio_tag, parse_video_tag
from realcast_box.rtmp import amf0

SEGMENT_SECONDS = 2.0
LADDER = [
    {"name": "720p60", "width": 1280, "height": 720, "bitrate": 3500, "fps": 60},
    {"name": "480p30", "width": 854, "height": 480, "bitrate": 1200, "fps": 30},
]
AUDIO_KBPS = 128
FLV_AUDIO, FLV_VIDEO, FLV_SCRIPT = 8, 9, 18


def make_input(path: Path, seconds: float) -> None:
    """Encode a 1080p60 test clip the way OBS would send it, into FLV."""
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=60:duration={seconds}",
            "-f", "lavfi",
            "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6000k",
            "-g", "120", "-bf", "2", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "160k", "-ac", "2",
            "-f", "flv", str(path),
        ],
        check=True,
    )  # fmt: skip


def read_flv(path: Path):
    """Yield (tag type, timestamp in ms, payload) of each tag of an FLV file."""
    data = path.read_bytes()
    position = int.from_bytes(data[5:9], "big") + 4
    while position + 11 <= len(data):
        kind = data[position] & 0x1F
        size = int.from_bytes(data[position + 1 : position + 4], "big")
        stamp = int.from_bytes(data[position + 4 : position + 7], "big")
        stamp |= data[position + 7] << 24
        payload = data[position + 11 : position + 11 + size]
        position += 11 + size + 4
        yield kind, stamp, payload


async def run_box(source: Path, output: Path, encoder: str) -> float:
    """Run the box's pipeline on ``source``; return the wall time in seconds."""
    segmenter = Segmenter(
        output, target_duration=SEGMENT_SECONDS, window=1000, rendition="source-bench"
    )
    # The RTMP path hands onMetaData (frame rate, data rates) to the segmenter
    # before the media; the file has it in its first script tag.
    for kind, _, payload in read_flv(source):
        if kind == FLV_SCRIPT:
            values = amf0.decode_all(payload)
            if values[:1] == ["onMetaData"] and isinstance(values[1:2][0], dict):
                segmenter.set_metadata(dict(values[1]))
            break
    profile = {"id": "profile_bench", "qualities": LADDER, "audio_bitrate": AUDIO_KBPS}
    started = time.perf_counter()
    ladder = LiveLadder(
        stream_id="bench",
        session_id="bench",
        source=segmenter,
        profile=profile,
        hardware_encoder=None if encoder == "libx264" else encoder,
        segment_duration=SEGMENT_SECONDS,
        window=1000,
        realtime=False,
    )
    for index, (kind, stamp, payload) in enumerate(read_flv(source)):
        if kind == FLV_VIDEO:
            segmenter.add_video(stamp, parse_video_tag(payload))
        elif kind == FLV_AUDIO:
            segmenter.add_audio(stamp, parse_audio_tag(payload))
        if index % 8 == 0:
            await asyncio.sleep(0)  # let encoded output reach the packagers
    segmenter.finish()
    await ladder.finish()
    elapsed = time.perf_counter() - started
    print("box renditions:", json.dumps(ladder.status()))
    return elapsed


def run_ffmpeg(source: Path, output: Path, encoder: str) -> float:
    """Run the same ladder with the ffmpeg CLI; return the wall time."""
    output.mkdir(parents=True, exist_ok=True)
    video = []
    for index, quality in enumerate(LADDER):
        rate = quality["bitrate"]
        video += [
            "-map", f"[v{index}]", f"-c:v:{index}", encoder,
            f"-b:v:{index}", f"{rate}k", f"-maxrate:v:{index}", f"{rate}k",
            f"-bufsize:v:{index}", f"{2 * rate}k",
        ]  # fmt: skip
        if encoder == "libx264":
            video += [f"-preset:v:{index}", "veryfast"]
    graph = (
        "[0:v]split=2[a][b];"
        "[a]scale=1280:720:flags=bicubic[v0];"
        "[b]fps=30,scale=854:480:flags=bicubic[v1]"
    )
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
        "-filter_complex", graph, *video,
        "-bf", "0", "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS})",
        "-map", "0:a", "-map", "0:a", "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k",
        "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_list_size", "0",
        "-hls_segment_type", "fmp4", "-var_stream_map", "v:0,a:0 v:1,a:1",
        "-master_pl_name", "index.m3u8", str(output / "stream_%v.m3u8"),
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def peak_memory_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    parser.add_argument(
        "--encoder",
        default="libx264",
        help="H.264 encoder for both sides, such as h264_nvenc on a GPU box",
    )
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("the ffmpeg CLI is needed: apt-get install ffmpeg", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="realcast-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "input-1080p60.flv"
    make_input(source, args.seconds)

    ffmpeg_seconds = run_ffmpeg(source, work / "ffmpeg", args.encoder)
    ffmpeg_memory = peak_memory_mib(resource.RUSAGE_CHILDREN)
    box_seconds = asyncio.run(run_box(source, work / "box", args.encoder))
    box_memory = peak_memory_mib(resource.RUSAGE_SELF)

    version = subprocess.run(
        ["ffmpeg", "-version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}")
    print(f"input: {args.seconds:g} s of 1080p60 H.264 (B-frames) + AAC in FLV")
    print(f"encoder: {args.encoder}")
    print(f"ffmpeg CLI: {version}")
    print(f"box: PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}")
    for name, seconds, memory in (
        ("ffmpeg CLI", ffmpeg_seconds, ffmpeg_memory),
        ("box", box_seconds, box_memory),
    ):
        print(
            f"{name:>10}: {seconds:6.2f} s wall, {args.seconds / seconds:5.2f}x "
            f"real time, peak memory {memory:.0f} MiB"
        )
    print(f"speed ratio box / ffmpeg CLI: {ffmpeg_seconds / box_seconds:.2f}")
    if args.keep is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
