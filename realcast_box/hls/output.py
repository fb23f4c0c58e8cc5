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
# AVERAGE-BANDWIDTH is rewritten when the measured average moves further
# than this fraction from the published value.
AVERAGE_BANDWIDTH_CHANGE = 0.1


@dataclass(frozen=True)
class VariantSource:
    """Codec configs and onMetaData hints that the multivariant playlist states."""

    video: AvcConfig | None
    audio: AacConfig | None
    hinted_bitrate: int | None  # bits per second, from onMetaData
    frame_rate: float | None


class Multivariant:
    """The multivariant playlist of one stream folder, shared by its renditions.

    Each rendition reports its variant entry. Once ``expect`` named the
    renditions to wait for, the file is first written when all of them have
    an entry (or on ``release``), so that players never see a variant whose
    media playlist does not exist yet. Without ``expect`` the first entry
    writes it. Entries appear in the order of ``expect``, then of arrival.
    """

    def __init__(self, directory: Path) -> None:
        self._path = directory / "index.m3u8"
        self._entries: dict[str, playlist.VariantEntry] = {}
        self._order: list[str] = []
        self._waiting: set[str] = set()
        self._written: tuple[playlist.VariantEntry, ...] | None = None

    @property
    def written(self) -> bool:
        return self._written is not None

    def expect(self, names: Sequence[str]) -> None:
        """Wait for entries of ``names`` before the first write."""
        self._order = [*names, *(n for n in self._order if n not in names)]
        if self._written is None:
            self._waiting = {name for name in names if name not in self._entries}

    def update(self, name: str, entry: playlist.VariantEntry) -> None:
        if name not in self._order:
            self._order.append(name)
        self._entries[name] = entry
        self._waiting.discard(name)
        self._write()

    def remove(self, name: str) -> None:
        """Leave a variant out from now on (a rendition that stopped)."""
        self._entries.pop(name, None)
        self._waiting.discard(name)
        self._write()

    def release(self) -> None:
        """Write now with the entries there are, without waiting for the rest."""
        self._waiting.clear()
        self._write()

    def _write(self) -> None:
        if self._waiting or not self._entries:
            return
        entries = tuple(self._entries[n] for n in self._order if n in self._entries)
        if entries == self._written:
            return
        text = playlist.multivariant_playlist(entries)
        _write_atomically(self._path, text.encode())
        self._written = entries


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
        multivariant: Multivariant | None = None,
    ) -> None:
        self._directory = directory
        self._multivariant = multivariant or Multivariant(directory)
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
        self._total_bits = 0
        self._total_seconds = 0.0
        self._variant: playlist.VariantEntry | None = None
        self.ready = False

    @property
    def rendition(self) -> str:
        return self._rendition

    @property
    def multivariant_directory(self) -> Path:
        """The stream's folder, which contains the multivariant playlist."""
        return self._directory

    @property
    def multivariant(self) -> Multivariant:
        return self._multivariant

    @property
    def rendition_directory(self) -> Path:
        """The folder of the media playlist, init and media segments."""
        return self._rendition_directory

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

    def skip_to(self, sequence: int) -> None:
        """Number the first segment ``sequence``; only before any segment."""
        if self._entries or sequence < self._next_sequence:
            raise RuntimeError(
                f"{self._log_name}: cannot skip to segment {sequence} after "
                f"segment {self._next_sequence - 1}"
            )
        self._first_sequence = self._next_sequence = sequence

    def write_gap(self, duration: float, *, discontinuity: bool = False) -> None:
        """List the next segment as missing (EXT-X-GAP); nothing is written for it.

        Only after a first segment, whose init segment the gap entry names.
        """
        sequence = self._next_sequence
        self._entries.append(
            playlist.SegmentEntry(
                uri=f"seg-{sequence}.m4s",
                duration=duration,
                map_uri=self._init_names[-1],
                discontinuity=discontinuity,
                gap=True,
            )
        )
        self._next_sequence += 1
        logger.debug("%s: segment %d is a gap", self._log_name, sequence)

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
    ) -> float:
        """Write one media segment, then the playlists that list it.

        Returns the segment's duration in seconds.
        """
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
            self._total_bits += len(data) * 8
            self._total_seconds += duration
        logger.debug(
            "%s: wrote %s, %.3f s, %d bytes", self._log_name, name, duration, len(data)
        )

        self._remove_old_files()
        self._write_media_playlist(ended=ended)
        self._write_multivariant_playlist(variant)
        self.ready = True
        return duration

    def end(self) -> None:
        """End the media playlist with EXT-X-ENDLIST, if it lists any segment."""
        if self._entries:
            self._write_media_playlist(ended=True)

    def variant(self) -> playlist.VariantEntry | None:
        """Return the entry this rendition last gave the multivariant playlist."""
        return self._variant

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
        average = self._variant.average_bandwidth if self._variant else None
        if self._total_seconds > 0:
            measured = math.ceil(self._total_bits / self._total_seconds)
            if average is None or abs(measured - average) > (
                AVERAGE_BANDWIDTH_CHANGE * average
            ):
                average = measured
        if average is not None:
            average = min(average, bandwidth)
        video, audio = source.video, source.audio
        variant = playlist.VariantEntry(
            uri=f"{self._rendition}/index.m3u8",
            bandwidth=bandwidth,
            codecs=tuple(c.codec_string for c in (video, audio) if c is not None),
            resolution=(video.width, video.height) if video is not None else None,
            frame_rate=source.frame_rate if video is not None else None,
            average_bandwidth=average,
        )
        if variant != self._variant:
            self._variant = variant
            self._multivariant.update(self._rendition, variant)

    def _write_file(self, name: str, data: bytes) -> None:
        _write_atomically(self._rendition_directory / name, data)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
