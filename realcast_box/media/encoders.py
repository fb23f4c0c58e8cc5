"""Probe of the H.264 encoders that work on this machine, and the choice among them.

An FFmpeg build may list an encoder (h264_nvenc) that cannot run here, for
want of a GPU, a driver or a device node. ``probe_encoders`` therefore opens
each candidate through PyAV and encodes one small frame, and reports which
ones produced a packet. The probe blocks for a few milliseconds per encoder
(more with a GPU driver to load), so the box runs it in a worker thread with
``asyncio.to_thread`` at start and keeps the result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

logger = logging.getLogger(__name__)

SOFTWARE_ENCODER = "libx264"
# Hardware encoders in the order of preference: NVIDIA, Intel Quick Sync,
# then the generic VA-API.
HARDWARE_ENCODERS = ("h264_nvenc", "h264_qsv", "h264_vaapi")
CANDIDATES = (*HARDWARE_ENCODERS, SOFTWARE_ENCODER)
# Pixel format of the probe frame. Quick Sync and VA-API take NV12 input.
PIXEL_FORMATS = {"h264_qsv": "nv12", "h264_vaapi": "nv12"}
# Hardware encoders reject very small frames, so the probe frame is a small
# 16:9 size. NOTE: chosen to stay above the usual minimums, not checked on
# every GPU or driver.
PROBE_WIDTH = 256
PROBE_HEIGHT = 144
PROBE_FRAME_RATE = 30
# Seconds the box waits for the probe at start. A hung driver would
# otherwise delay the start forever.
PROBE_TIMEOUT = 30.0


@dataclass(frozen=True)
class EncoderStatus:
    """The probe result of one encoder: whether it works, and why not if it fails."""

    name: str
    available: bool
    hardware: bool
    detail: str


def probe_encoders(names: Sequence[str] = CANDIDATES) -> list[EncoderStatus]:
    """Open each encoder, encode one frame and flush it; return one status each.

    Blocking: call it through ``asyncio.to_thread`` from async code.
    """
    return [probe_encoder(name) for name in names]


def probe_encoder(name: str) -> EncoderStatus:
    """Return whether encoder ``name`` opens and encodes a frame here."""
    hardware = name != SOFTWARE_ENCODER
    if name not in av.codecs_available:
        detail = "not in this FFmpeg build"
        return EncoderStatus(name, available=False, hardware=hardware, detail=detail)
    try:
        size = _encode_test_frame(name)
    # PyAV raises av.FFmpegError subclasses, which are also OSError or
    # ValueError; anything else from a broken driver must not stop the box.
    except Exception as exc:
        detail = f"failed to encode a test frame: {type(exc).__name__}: {exc}"
        logger.info("H.264 encoder %s is unavailable: %s", name, detail)
        return EncoderStatus(name, available=False, hardware=hardware, detail=detail)
    if size == 0:
        detail = "encoded no data from a test frame"
        return EncoderStatus(name, available=False, hardware=hardware, detail=detail)
    detail = f"encoded a {PROBE_WIDTH}x{PROBE_HEIGHT} test frame ({size} bytes)"
    return EncoderStatus(name, available=True, hardware=hardware, detail=detail)


def _encode_test_frame(name: str) -> int:
    """Encode one gray frame with encoder ``name``; return the bytes produced."""
    pixel_format = PIXEL_FORMATS.get(name, "yuv420p")
    context = av.CodecContext.create(name, "w")
    context.width = PROBE_WIDTH
    context.height = PROBE_HEIGHT
    context.pix_fmt = pixel_format
    context.time_base = Fraction(1, PROBE_FRAME_RATE)
    context.framerate = Fraction(PROBE_FRAME_RATE, 1)
    context.open()
    gray = np.full((PROBE_HEIGHT, PROBE_WIDTH, 3), 128, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(gray, format="rgb24").reformat(
        format=pixel_format
    )
    frame.pts = 0
    packets = [*context.encode(frame), *context.encode(None)]
    return sum(packet.size for packet in packets)


def choose_encoder(
    statuses: Sequence[EncoderStatus], enable_gpu_acceleration: bool
) -> str:
    """Return the H.264 encoder to use: the first working hardware one, else libx264.

    Hardware encoders are tried in the order of HARDWARE_ENCODERS, and only
    when ``enable_gpu_acceleration`` is set. A request for acceleration that
    no hardware encoder can serve logs a warning and falls back to libx264.
    """
    if not enable_gpu_acceleration:
        return SOFTWARE_ENCODER
    working = {status.name for status in statuses if status.available}
    for name in HARDWARE_ENCODERS:
        if name in working:
            return name
    logger.warning(
        "GPU acceleration requested but no hardware H.264 encoder works here"
        " (tried %s); falling back to %s",
        ", ".join(HARDWARE_ENCODERS),
        SOFTWARE_ENCODER,
    )
    return SOFTWARE_ENCODER


def format_table(statuses: Sequence[EncoderStatus]) -> str:
    """Return the statuses as a text table, one encoder per line."""
    width = max([len("ENCODER"), *(len(status.name) for status in statuses)])
    lines = [f"{'ENCODER':<{width}}  TYPE      STATUS       DETAIL"]
    for status in statuses:
        kind = "hardware" if status.hardware else "software"
        state = "available" if status.available else "unavailable"
        lines.append(f"{status.name:<{width}}  {kind:<8}  {state:<11}  {status.detail}")
    return "\n".join(lines)


async def probe_encoders_async(timeout: float = PROBE_TIMEOUT) -> list[EncoderStatus]:
    """Run ``probe_encoders`` in a worker thread, waiting at most ``timeout`` seconds.

    On a timeout every encoder is reported unavailable. The worker thread
    cannot be interrupted, so it may finish later in the background.
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(probe_encoders), timeout)
    except TimeoutError:
        logger.warning("H.264 encoder probe timed out after %s s", timeout)
        detail = f"probe timed out after {timeout:g} s"
        return [
            EncoderStatus(name, False, name != SOFTWARE_ENCODER, detail)
            for name in CANDIDATES
        ]
