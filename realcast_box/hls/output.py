"""The files of one HLS rendition: init and media segments, and both playlists.

Writes go to a temporary name first and are renamed into place, and a
playlist is written only after the segments it lists. ``OSError`` from the
file system propagates to the caller.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from realcast_box.hls import fmp4, playlist
from realcast_box.media.codecs import AacConfig, AvcConfig

logger = logging.getLogger(__name__)

# Segments stay on disk this many places after they leave the playlist, for
# players that are still fetching them.
EXTRA_SEGMENTS_KEPT = 2
# BANDWIDTH is written this much above the peak segment bit rate so that it
# need not be rewritten for every small new peak.
BANDWIDTH_HEADROOM = 1.1


@dataclass(frozen=True)
class VariantSource:
    """Codec configs and onMetaData hints that the multivariant playlist states."""

    video: AvcConfig | None
    audio: AacConfig | None
    hinted_bitrate: int | None  # bits per second, from onMetaData
    frame_rate: float | None


class RenditionFiles:
    """Init segments, media segments and playlists of one rendition.

    Layout of ``directory``: ``index.m3u8`` (multivariant), and below
    ``rendition/`` the media playlist ``index.m3u8``, ``init-N.mp4`` and
    ``seg-N.m4s``, where N of a segment is its media sequence number.
    """

    def __init__(
        self,
        directory: Path,
        rendition: str,
        *,
        target_duration: float,
        window: int,
        first_sequence: int,
        log_name: str,
    ) -> None:
        self._directory = directory
        self._rendition = rendition
        self._rendition_directory = directory / rendition
        self._rendition_directory.mkdir(parents=True, exist_ok=True)
        self._window = window
        self._log_name = log_name
        self._init_count = 0
        self._init_names: list[str] = []
        self._entries: list[playlist.SegmentEntry] = []
        self._first_sequence = first_sequence
        self._next_sequence = first_sequence
        self._removed_discontinuities = 0
        self._target_duration = playlist.rounded_duration(target_duration) or 1
        self._peak_bitrate = 0.0
        self._variant: playlist.VariantEntry | None = None
        self.ready = False

    @property
    def segment_count(self) -> int:
        return self._next_sequence - self._first_sequence

    @property
    def next_sequence(self) -> int:
        return self._next_sequence

    @property
    def init_count(self) -> int:
        """Number of init segments written so far."""
        return self._init_count

    @property
    def current_init(self) -> str:
        return self._init_names[-1]

    def write_init(self, tracks: Sequence[fmp4.Track]) -> str:
        """Write a new init segment for ``tracks`` and return its name."""
        name = f"init-{self._init_count}.mp4"
        self._write_file(name, fmp4.init_segment(tracks))
        self._init_names.append(name)
        self._init_count += 1
        return name

    def write_segment(
        self,
        fragments: Sequence[fmp4.Fragment],
        *,
        discontinuity: bool,
        program_date_time: datetime,
        variant: VariantSource,
        ended: bool = False,
    ) -> None:
        """Write one media segment, then the playlists that list it."""
        primary = fragments[0]  # video when the segment has video
        timescale = primary.track.timescale
        duration = sum(sample.duration for sample in primary.samples) / timescale

        sequence = self._next_sequence
        # mfhd holds 32 bits, too few for clock-derived media sequence numbers,
        # and only has to increase within the session.
        data = fmp4.media_segment(self.segment_count + 1, fragments)
        name = f"seg-{sequence}.m4s"
        self._write_file(name, data)
        self._entries.append(
            playlist.SegmentEntry(
                uri=name,
                duration=duration,
                map_uri=self._init_names[-1],
                discontinuity=discontinuity,
                program_date_time=program_date_time,
            )
        )
        self._next_sequence += 1
        if duration > 0:
            self._peak_bitrate = max(self._peak_bitrate, len(data) * 8 / duration)
        logger.debug(
            "%s: wrote %s, %.3f s, %d bytes", self._log_name, name, duration, len(data)
        )

        self._remove_old_files()
        self._write_media_playlist(ended=ended)
        self._write_multivariant_playlist(variant)
        self.ready = True

    def end(self) -> None:
        """End the media playlist with EXT-X-ENDLIST, if it lists any segment."""
        if self._entries:
            self._write_media_playlist(ended=True)

    def _remove_old_files(self) -> None:
        while len(self._entries) > self._window + EXTRA_SEGMENTS_KEPT:
            old = self._entries.pop(0)
            self._removed_discontinuities += old.discontinuity
            (self._rendition_directory / old.uri).unlink(missing_ok=True)
        needed = {entry.map_uri for entry in self._entries}
        needed.add(self._init_names[-1])
        for name in [name for name in self._init_names if name not in needed]:
            (self._rendition_directory / name).unlink(missing_ok=True)
            self._init_names.remove(name)

    def _write_media_playlist(self, *, ended: bool) -> None:
        listed = self._entries[-self._window :]
        hidden = self._entries[: len(self._entries) - len(listed)]
        self._target_duration = playlist.target_duration(
            (entry.duration for entry in listed), minimum=self._target_duration
        )
        text = playlist.media_playlist(
            listed,
            target_duration=self._target_duration,
            media_sequence=self._next_sequence - len(listed),
            discontinuity_sequence=self._removed_discontinuities
            + sum(entry.discontinuity for entry in hidden),
            ended=ended,
        )
        self._write_file("index.m3u8", text.encode())

    def _write_multivariant_playlist(self, source: VariantSource) -> None:
        needed = max(self._peak_bitrate, source.hinted_bitrate or 0)
        published = self._variant.bandwidth if self._variant is not None else 0
        bandwidth = published
        if needed > published:
            bandwidth = math.ceil(needed * BANDWIDTH_HEADROOM)
        video, audio = source.video, source.audio
        variant = playlist.VariantEntry(
            uri=f"{self._rendition}/index.m3u8",
            bandwidth=bandwidth,
            codecs=tuple(c.codec_string for c in (video, audio) if c is not None),
            resolution=(video.width, video.height) if video is not None else None,
            frame_rate=source.frame_rate if video is not None else None,
        )
        if variant == self._variant:
            return
        text = playlist.multivariant_playlist([variant])
        _write_atomically(self._directory / "index.m3u8", text.encode())
        self._variant = variant

    def _write_file(self, name: str, data: bytes) -> None:
        _write_atomically(self._rendition_directory / name, data)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
