"""Which renditions of a transcoding profile a source gets, and at what size.

Pure functions. A quality is a box (width x height) with a bit rate and a
frame rate; its rendition fits the source picture into that box with the
source's aspect ratio kept. Nothing is upscaled: a quality whose box is
larger than the source in both directions, or whose frame rate is above the
source's, is dropped with a reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# A quality's frame rate may exceed the measured source rate by this factor
# and still count as equal: 30 fps against a 29.97 fps source is kept.
FRAME_RATE_TOLERANCE = 1.02
# H.264 in 4:2:0 needs even picture sides.
MINIMUM_SIDE = 2


@dataclass(frozen=True)
class Cut:
    """The source packager started media segment ``sequence`` at this frame.

    Renditions cut at the same frames and number their segments the same,
    with EXT-X-DISCONTINUITY where ``discontinuity`` marks one in the source.
    ``gap_frame_ticks`` is the duration (90 kHz) that the source gave the
    last frame of the segment before, when a gap in the video ended it.
    """

    sequence: int
    discontinuity: bool
    gap_frame_ticks: int | None = None


@dataclass(frozen=True)
class Quality:
    """One entry of a profile's ``qualities``: bitrate in kbps, fps per second."""

    name: str
    width: int
    height: int
    bitrate: int
    fps: float

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Quality:
        return cls(
            name=str(item["name"]),
            width=int(item["width"]),
            height=int(item["height"]),
            bitrate=int(item["bitrate"]),
            fps=float(item["fps"]),
        )

    @property
    def cost(self) -> float:
        """Pixels per second to encode, the measure shedding ranks by."""
        return self.width * self.height * self.fps


@dataclass(frozen=True)
class RenditionPlan:
    """A kept quality and the output it gets from the current source."""

    quality: Quality
    width: int
    height: int
    fps: float

    @property
    def name(self) -> str:
        return self.quality.name


@dataclass(frozen=True)
class DroppedQuality:
    name: str
    reason: str


def even(value: float) -> int:
    """Round to the nearest even integer, at least MINIMUM_SIDE."""
    return max(MINIMUM_SIDE, 2 * round(value / 2))


def fit_size(
    box_width: int, box_height: int, source_width: int, source_height: int
) -> tuple[int, int]:
    """Return the even size that fits the source into the box, never larger.

    The aspect ratio is kept up to the rounding to even sides. A source
    smaller than the box keeps its own size (rounded down to even).
    """
    scale = min(box_width / source_width, box_height / source_height, 1.0)
    if scale >= 1.0:
        return (
            max(MINIMUM_SIDE, source_width - source_width % 2),
            max(MINIMUM_SIDE, source_height - source_height % 2),
        )
    return (
        min(box_width, even(source_width * scale)),
        min(box_height, even(source_height * scale)),
    )


def plan_ladder(
    qualities: Iterable[Quality],
    source_width: int,
    source_height: int,
    source_fps: float | None,
) -> tuple[list[RenditionPlan], list[DroppedQuality]]:
    """Return the renditions to encode for this source, and the dropped qualities.

    ``source_fps`` None (unknown) drops no quality for its frame rate.
    """
    kept: list[RenditionPlan] = []
    dropped: list[DroppedQuality] = []
    for quality in qualities:
        if quality.width > source_width and quality.height > source_height:
            dropped.append(
                DroppedQuality(
                    quality.name,
                    f"{quality.width}x{quality.height} is larger than the source's "
                    f"{source_width}x{source_height}; the box does not upscale",
                )
            )
            continue
        if source_fps is not None and quality.fps > source_fps * FRAME_RATE_TOLERANCE:
            dropped.append(
                DroppedQuality(
                    quality.name,
                    f"{quality.fps:g} fps is above the source's {source_fps:.3g} "
                    "fps; the box does not raise frame rates",
                )
            )
            continue
        width, height = fit_size(
            quality.width, quality.height, source_width, source_height
        )
        fps = quality.fps if source_fps is None else min(quality.fps, source_fps)
        kept.append(RenditionPlan(quality, width, height, fps))
    return kept, dropped
