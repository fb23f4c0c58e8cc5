"""The files of one HLS rendition: init and media segments, and both playlists.

Writes go to a temporary name first and are renamed into place, and a
playlist is written only after the segments it lists. ``OSError`` from the
file system propagates to the caller.

With low-latency HLS, the parts and the media playlist that lists them live
in memory while the session runs, and the /hls routes serve them from there.
The disk contains what regular HLS needs: init and media segments and a media
playlist without part tags, rewritten once per segment. Creating a file
costs the kernel far more than the write itself (about 0.1 ms of CPU each on
ext4), and a file per part plus a playlist per part made file creation the
largest cost of ingest.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from realcast_box.hls import fmp4, playlist
from realcast_box.hls.timeline import TrackBuffer
from realcast_box.media.codecs import AacConfig, AvcConfig

logger = logging.getLogger(__name__)

# A live media playlist lists at least this many target durations of media,
# as RFC 8216 (section 6.2.2) requires, even where that takes more segments
# than hls_window. A feed whose frames come further apart than the part
# target, for example, gets a short segment per frame.
MIN_LISTED_TARGETS = 3
# Maximum number of segments in a live media playlist, whatever their durations.
# Segments that left it, and the parts of segments, are kept for at most as
# many segments, so that media time that does not advance cannot grow the
# disk or memory.
MAX_LISTED_SEGMENTS = 1000
# Parts stay in memory for this many target durations of media after the
# playlist stops listing them, as RFC 8216bis (section 6.2.2) requires.
PART_KEPT_TARGETS = 3
# BANDWIDTH is written this much above the peak segment bit rate so that it
# need not be rewritten for every small new peak.
BANDWIDTH_HEADROOM = 1.1
# AVERAGE-BANDWIDTH is rewritten when the measured average moves further
# than this fraction from the published value.
AVERAGE_BANDWIDTH_CHANGE = 0.1
# Complete segments whose parts a low-latency playlist still lists. RFC 8216bis
# recommends removing parts more than three target durations from the end,
# and players start at PART-HOLD-BACK (about a second) from it.
PART_SEGMENTS_LISTED = 2
# PART-HOLD-BACK in part targets. RFC 8216bis requires at least two and
# recommends at least three.
PART_HOLD_BACK_PARTS = 3
# A blocked playlist or part request waits this many target durations at
# most, as RFC 8216bis suggests, and then gets a 503.
BLOCKING_TIMEOUT_TARGETS = 3
# Highest _HLS_part index accepted: a segment of MAX_SEGMENT_SECONDS (60 s)
# in parts of the smallest part target (0.1 s) has 600 parts.
MAX_PART_INDEX = 1000
# Frames of at least WIDEN_FRACTION of the part target, up to
# MAX_WIDENED_FRAME_SECONDS (1 fps), widen it before the first part to
# PART_TARGET_HEADROOM frames. RTMP times are whole milliseconds, so 3 fps
# frames last 0.333 s or 0.334 s, and the headroom keeps both in one target.
WIDEN_FRACTION = 0.8
PART_TARGET_HEADROOM = 1.25
MAX_WIDENED_FRAME_SECONDS = 1.0


def widened_part_target(
    part_target: float, frame_seconds: float, target_duration: float
) -> float:
    """Return the part target that fits frames of ``frame_seconds``.

    ``part_target`` itself for frames well below it, and for frames longer
    than MAX_WIDENED_FRAME_SECONDS, which are gaps rather than a frame rate.
    """
    if not WIDEN_FRACTION * part_target <= frame_seconds <= MAX_WIDENED_FRAME_SECONDS:
        return part_target
    widened = math.ceil(frame_seconds * PART_TARGET_HEADROOM * 1000) / 1000
    return max(part_target, min(widened, float(target_duration)))


def is_gap(frame_seconds: float, part_target: float | None) -> bool:
    """Return whether a video frame this long is a gap in low-latency HLS.

    A part has at least one frame and may not be longer than PART-TARGET
    (RFC 8216bis), so any longer frame is one.
    """
    return part_target is not None and frame_seconds > part_target


# Numbers that tell renditions apart in caches, never reused in a process.
_RENDITION_IDS = itertools.count(1)


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
        # Every rendition packaged into this folder, for rendition reports
        # and blocking requests.
        self._renditions: dict[str, RenditionFiles] = {}

    @property
    def written(self) -> bool:
        return self._written is not None

    def register(self, files: RenditionFiles) -> None:
        """Make ``files`` findable by ``rendition`` and listed in reports."""
        self._renditions[files.rendition] = files

    def rendition(self, name: str) -> RenditionFiles | None:
        """Return the live rendition whose folder is ``name``, if any."""
        return self._renditions.get(name)

    def rendition_reports(self, exclude: str) -> list[playlist.RenditionReport]:
        """Return the newest part of every other listed low-latency rendition."""
        reports = []
        for name, files in self._renditions.items():
            last_part = files.last_part
            if name == exclude or name not in self._entries or last_part is None:
                continue
            reports.append(
                playlist.RenditionReport(f"../{name}/index.m3u8", *last_part)
            )
        return reports

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
        self._renditions.pop(name, None)
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

    With ``part_duration`` set, the rendition is low-latency HLS: media is
    written as partial segments ``part-N.K.m4s`` (K counts from 0 within
    segment N), each one moof and mdat, and each segment file is the
    concatenation of its parts. Parts and the low-latency playlist are kept
    in memory (``live_part``, ``live_playlist``); the media playlist on disk
    is the regular HLS one. Waiters for a part (blocking playlist reload,
    preload hints) are woken once the part is there.
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
        part_duration: float | None = None,
    ) -> None:
        if part_duration is not None and not 0 < part_duration <= target_duration:
            raise ValueError(
                f"invalid part_duration {part_duration!r}: expected seconds > 0 and "
                f"at most the target duration {target_duration!r}"
            )
        self._directory = directory
        self._multivariant = multivariant or Multivariant(directory)
        self._rendition = rendition
        self._rendition_directory = directory / rendition
        self._rendition_directory.mkdir(parents=True, exist_ok=True)
        self._window = window
        self._log_name = log_name
        self._init_count = 0
        self._init_names: list[str] = []
        # The segments that the media playlist lists, oldest first.
        self._entries: list[playlist.SegmentEntry] = []
        # Maximum duration of the playlists that listed each segment, by URI.
        self._longest_listing: dict[str, float] = {}
        # Segments that left the playlist, with the longest listing of each,
        # while the media playlist on disk still lists them (a gap entry
        # slides the window without rewriting that file).
        self._leaving: list[tuple[playlist.SegmentEntry, float]] = []
        # Segments that left both playlists and stay on disk until the media
        # time (``_media_seconds``) reaches their deadline, oldest first.
        self._retired: list[tuple[float, playlist.SegmentEntry]] = []
        # Seconds of media in the segments completed so far, gaps included.
        self._media_seconds = 0.0
        self._first_sequence = first_sequence
        self._next_sequence = first_sequence
        self._removed_discontinuities = 0
        self._target_duration = playlist.rounded_duration(target_duration) or 1
        self._peak_bitrate = 0.0
        self._total_bits = 0
        self._total_seconds = 0.0
        self._variant: playlist.VariantEntry | None = None
        # False from the first segment that starts mid-GOP (see _mark_dependent).
        self._independent = True
        # Whether the published BANDWIDTH is an estimate from the first parts.
        self._bandwidth_from_parts = False
        self.ready = False
        self._ended = False

        self._part_duration = part_duration
        # The open segment's parts: entries, bytes, and the tags before them.
        self._open_parts: list[playlist.PartEntry] = []
        self._open_data: list[bytes] = []
        self._open_header: playlist.SegmentEntry | None = None
        # mfhd sequence number of the next moof; it increases per part.
        self._fragment_number = 1
        # (media sequence number, part index) of the newest part.
        self._last_part: tuple[int, int] | None = None
        # Part names of the complete segments whose parts are listed, oldest
        # first, then those of segments whose parts left the playlist, with
        # the media time (``_media_seconds``) at which they leave memory.
        self._part_files: deque[list[str]] = deque()
        self._retired_parts: deque[tuple[float, list[str]]] = deque()
        # Contents of the parts still listed or recently listed, by name.
        self._parts: dict[str, bytes] = {}
        # The low-latency media playlist (key None) and its delta updates
        # (keyed by the _HLS_skip request). Each is built on its first request
        # after a change, and ``playlist_version`` counts the changes.
        self._live_playlists: dict[playlist.SkipRequest | None, bytes] = {}
        self.playlist_version = 0
        self.cache_id = next(_RENDITION_IDS)
        # Futures of blocked requests, keyed by the part position they wait for.
        self._waiters: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._multivariant.register(self)

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

    @property
    def target_duration(self) -> int:
        """EXT-X-TARGETDURATION in seconds."""
        return self._target_duration

    @property
    def part_duration(self) -> float | None:
        """The part target in seconds, or None when low-latency HLS is off."""
        return self._part_duration

    def widen_part_target(self, frame_seconds: float) -> bool:
        """Raise the part target to fit frames of ``frame_seconds``; True if it did.

        This works only before the rendition's first part, while no playlist
        has shown PART-TARGET, because it must not change afterwards
        (RFC 8216bis). A part has at least one frame, so a feed at about
        3 fps or below would otherwise get parts longer than the target
        (see widened_part_target).
        """
        if self._part_duration is None or self._last_part is not None:
            return False
        widened = widened_part_target(
            self._part_duration, frame_seconds, self._target_duration
        )
        if widened <= self._part_duration:
            return False
        logger.warning(
            "%s: frames last %.3f s, longer than the %.3f s part target "
            "(hls_part_duration); this session's parts target %.3f s",
            self._log_name,
            frame_seconds,
            self._part_duration,
            widened,
        )
        self._part_duration = widened
        return True

    @property
    def open_part_count(self) -> int:
        """Number of parts written of the segment not yet complete."""
        return len(self._open_parts)

    @property
    def last_part(self) -> tuple[int, int] | None:
        """(media sequence number, part index) of the newest part, if any."""
        return self._last_part

    @property
    def ended(self) -> bool:
        """Whether the media playlist has EXT-X-ENDLIST."""
        return self._ended

    @property
    def skip_boundary(self) -> float | None:
        """CAN-SKIP-UNTIL in seconds, or None when delta updates are not offered.

        They are offered only with low-latency HLS and a window of more than
        SKIP_BOUNDARY_TARGETS segments. A shorter window, such as the
        default 6 segments, never lists a segment that lies further than
        the boundary from the end, so a delta update would skip nothing.
        """
        if self._part_duration is None:
            return None
        if self._window <= playlist.SKIP_BOUNDARY_TARGETS:
            return None
        return float(playlist.SKIP_BOUNDARY_TARGETS * self._target_duration)

    @property
    def blocking_timeout(self) -> float:
        """Seconds a blocked request waits at most before its 503."""
        return BLOCKING_TIMEOUT_TARGETS * self._target_duration

    def skip_to(self, sequence: int) -> None:
        """Number the first segment ``sequence``; only before any segment."""
        if self._entries or self._open_parts or sequence < self._next_sequence:
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
        self._media_seconds += duration
        # The playlist on disk lists the segments that leave here until the
        # next segment rewrites it, and their time starts then.
        self._slide_window()
        self._playlist_changed()
        logger.debug("%s: segment %d is a gap", self._log_name, sequence)

    def write_init(self, tracks: Sequence[fmp4.Track]) -> str:
        """Write a new init segment for ``tracks`` and return its name."""
        name = f"init-{self._init_count}.mp4"
        self._write_file(name, fmp4.init_segment(tracks))
        self._init_names.append(name)
        self._init_count += 1
        return name

    def part_due(self, primary: TrackBuffer, next_dts: int | None = None) -> bool:
        """Return whether the open part is full: one more sample would overflow it.

        ``primary`` is the track that times parts: video, or audio alone.
        Called with the DTS of the sample about to be pushed, this checks the
        pending sample, whose duration that DTS gives, so no part ever
        exceeds the part target (unless one sample does). Called without,
        it predicts the next sample from the last one with 1 ms of slack,
        so a part is written as soon as it is full rather than a frame late.
        """
        if self._part_duration is None or not primary.samples:
            return False
        limit = self._part_duration * primary.track.timescale
        if next_dts is not None:
            if primary.pending is None:
                return False
            upcoming = next_dts - primary.pending.dts
        else:
            upcoming = primary.last_duration + primary.track.timescale // 1000
        return primary.part_ticks + upcoming > limit

    def write_part(
        self,
        fragments: Sequence[fmp4.Fragment],
        *,
        discontinuity: bool,
        program_date_time: datetime,
        variant: VariantSource | None = None,
    ) -> None:
        """Write one partial segment of the open segment, then the media playlist.

        ``discontinuity`` and ``program_date_time`` describe the open
        segment; only those given with its first part are used. The first
        part with ``variant`` also gives the multivariant playlist its entry.
        """
        if self._part_duration is None or not fragments:
            return
        self._add_part(fragments, discontinuity, program_date_time)
        self._playlist_changed()
        # The variant is listed from the first part on, so low-latency players
        # can start about one part target after the first keyframe. Players
        # without low-latency support see a media playlist without segments
        # until the first one is complete. FFmpeg's HLS demuxer (8.0) opens
        # such a playlist as an input without streams, so those players must
        # wait for a segment.
        if self._variant is None and variant is not None:
            self._write_multivariant_playlist(variant)
        self._wake_waiters()

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

        With low-latency HLS, ``fragments`` (which may be empty) become the
        segment's last part. Returns the segment's duration in seconds.
        """
        parts: tuple[playlist.PartEntry, ...] = ()
        if self._part_duration is not None:
            if fragments:
                self._add_part(fragments, discontinuity, program_date_time)
            header = self._open_header
            if header is None:
                raise ValueError("a media segment needs at least one sample")
            parts = tuple(self._open_parts)
            independent = parts[0].independent
            data = b"".join(self._open_data)
            duration = sum(part.duration for part in parts)
            discontinuity = header.discontinuity
            program_date_time = header.program_date_time or program_date_time
            self._part_files.append([part.uri for part in parts])
            self._open_parts = []
            self._open_data = []
            self._open_header = None
        else:
            primary = fragments[0]  # video when the segment has video
            timescale = primary.track.timescale
            duration = sum(sample.duration for sample in primary.samples) / timescale
            independent = not primary.track.is_video or primary.samples[0].keyframe
            if not independent:
                self._independent = False
            # mfhd holds 32 bits, too few for clock-derived media sequence
            # numbers, and only has to increase within the session.
            data = fmp4.media_segment(self._next_fragment_number(), fragments)

        sequence = self._next_sequence
        name = f"seg-{sequence}.m4s"
        self._write_file(name, data)
        self._entries.append(
            playlist.SegmentEntry(
                uri=name,
                duration=duration,
                map_uri=self._init_names[-1],
                discontinuity=discontinuity,
                program_date_time=program_date_time,
                parts=parts,
                independent=independent,
            )
        )
        self._next_sequence += 1
        self._media_seconds += duration
        if duration > 0:
            self._peak_bitrate = max(self._peak_bitrate, len(data) * 8 / duration)
            self._total_bits += len(data) * 8
            self._total_seconds += duration
        logger.debug(
            "%s: wrote %s, %.3f s, %d bytes", self._log_name, name, duration, len(data)
        )

        self._slide_window()
        self._ended = ended
        self._playlist_changed()
        self._write_media_playlist(ended=ended)
        self._remove_old_files()
        if ended:
            self._parts.clear()  # written out with the ended playlist
        self._write_multivariant_playlist(variant)
        self.ready = True
        self._wake_waiters()
        return duration

    def end(self) -> None:
        """End the media playlist with EXT-X-ENDLIST, if it lists any segment.

        The parts in memory are dropped: from now on the segments on disk
        hold all the media.
        """
        if self._entries:
            self._ended = True
            self._playlist_changed()
            self._write_media_playlist(ended=True)
        self._parts.clear()
        self._wake_waiters()

    def variant(self) -> playlist.VariantEntry | None:
        """Return the entry this rendition last gave the multivariant playlist."""
        return self._variant

    # Low-latency HLS in memory.

    def live_part(self, name: str) -> bytes | None:
        """Return the part named ``name`` (``part-N.K.m4s``), if still kept."""
        return self._parts.get(name)

    def live_playlist(self, skip: playlist.SkipRequest | None = None) -> bytes | None:
        """Return the low-latency media playlist as it is now.

        With ``skip``, returns its delta update, or the whole playlist while
        ``skip_boundary`` is None. None when low-latency HLS is off, before
        the first part, and once the playlist has ended (the file on disk
        is then complete). Each text is rebuilt only after
        ``playlist_version`` changed.
        """
        if self._part_duration is None or self._ended or self._last_part is None:
            return None
        if self.skip_boundary is None:
            skip = None
        text = self._live_playlists.get(skip)
        if text is None:
            built = self._media_playlist(ended=False, low_latency=True, skip=skip)
            text = self._live_playlists[skip] = built.encode()
        return text

    # Blocking requests.

    def check_delivery_directive(self, msn: int, part: int | None) -> str | None:
        """Return why a request for part ``part`` of segment ``msn`` is invalid.

        RFC 8216bis: a segment more than two past the newest one, or a part
        more than the Advance Part Limit past the newest part, is a bad
        request. Returns None for a valid request.
        """
        if self._last_part is not None:
            last_msn, last_index = self._last_part
        else:
            last_msn, last_index = self._next_sequence - 1, -1
        if msn > last_msn + 2:
            return (
                f"invalid _HLS_msn {msn}: the newest segment of this playlist is "
                f"{last_msn}, and a request may be at most 2 segments ahead of it"
            )
        if part is None or self._part_duration is None:
            return None
        if part > MAX_PART_INDEX:
            return f"invalid _HLS_part {part}: expected at most {MAX_PART_INDEX}"
        # Three parts ahead, or three seconds of parts for targets under 1 s.
        limit = math.ceil(3 / min(self._part_duration, 1.0))
        if msn == last_msn and part > last_index + limit:
            return (
                f"invalid _HLS_part {part}: the newest part of segment {msn} is "
                f"{last_index}, and a request may be at most {limit} parts ahead"
            )
        # The open segment may end at any time, so part K of a later segment
        # is at least K + 1 parts ahead, plus one part per segment between.
        if msn > last_msn and part + (msn - last_msn) > limit:
            return (
                f"invalid _HLS_part {part}: part {part} of segment {msn} is more"
                f" than {limit} parts past the newest part (part {last_index} of"
                f" segment {last_msn})"
            )
        return None

    def part_available(self, msn: int, part: int) -> bool:
        """Return whether the playlist lists part ``part`` of segment ``msn`` or later.

        A part index beyond the last part of a complete segment counts as
        part 0 of the next segment (RFC 8216bis). An ended playlist has
        everything it will ever have.
        """
        if self._ended:
            return True
        if self._last_part is None:
            return False
        return (msn, part) <= self._last_part

    async def wait_for_part(self, msn: int, part: int, timeout: float) -> bool:
        """Wait until ``part_available(msn, part)``; False after ``timeout`` s.

        Waiters of the same position share one future, so a thousand
        blocked players cost one wake-up per part written.
        """
        position = (msn, part)
        if self.part_available(msn, part):
            return True
        future = self._waiters.get(position)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[position] = future
        # asyncio.wait, unlike wait_for, never cancels the shared future.
        await asyncio.wait({future}, timeout=timeout)
        return self.part_available(msn, part)

    def _wake_waiters(self) -> None:
        if not self._waiters:
            return
        for position in list(self._waiters):
            if self._ended or (
                self._last_part is not None and position <= self._last_part
            ):
                future = self._waiters.pop(position)
                if not future.done():
                    future.set_result(None)

    # Internals.

    def _add_part(
        self,
        fragments: Sequence[fmp4.Fragment],
        discontinuity: bool,
        program_date_time: datetime,
    ) -> None:
        """Keep one part in memory and add it to the open segment."""
        sequence = self._next_sequence
        index = len(self._open_parts)
        data = fmp4.media_segment(self._next_fragment_number(), fragments)
        name = f"part-{sequence}.{index}.m4s"
        self._parts[name] = data
        primary = fragments[0]  # video when the part has video
        duration = sum(s.duration for s in primary.samples) / primary.track.timescale
        first_video = next((f for f in fragments if f.track.is_video), None)
        independent = first_video is None or first_video.samples[0].keyframe
        if self._open_header is None:
            self._open_header = playlist.SegmentEntry(
                uri=f"seg-{sequence}.m4s",
                duration=0.0,
                map_uri=self._init_names[-1],
                discontinuity=discontinuity,
                program_date_time=program_date_time,
            )
        self._open_parts.append(playlist.PartEntry(name, duration, independent))
        self._open_data.append(data)
        self._last_part = (sequence, index)
        if index == 0 and not independent:
            self._mark_dependent()

    def _mark_dependent(self) -> None:
        """Note a segment that starts mid-GOP in the multivariant playlist.

        Its EXT-X-INDEPENDENT-SEGMENTS covers every segment of every variant
        (RFC 8216 section 4.3.5.1), so it goes for the rest of the session,
        also once the segment has left the media playlist.
        """
        self._independent = False
        if self._variant is not None and self._variant.independent:
            self._variant = replace(self._variant, independent=False)
            self._multivariant.update(self._rendition, self._variant)

    def _next_fragment_number(self) -> int:
        number = self._fragment_number
        self._fragment_number = number % 0xFFFFFFFF + 1
        return number

    def _slide_window(self) -> None:
        """Take the oldest segments out of the playlist, as RFC 8216 allows.

        RFC 8216 (section 6.2.2) sets the limits. The oldest segment leaves
        the playlist only while it lists more than ``hls_window`` segments,
        and then only if the rest last at least MIN_LISTED_TARGETS target
        durations. Once the playlist on disk no longer lists it either, it
        stays on disk for its own duration plus the duration of the longest
        playlist that listed it. Parts whose tags left the playlist stay in
        memory for PART_KEPT_TARGETS target durations (RFC 8216bis). Both
        times are counted in media seconds, which a live feed writes in
        real time. _remove_old_files drops them after that.
        """
        entries = self._entries
        listed_seconds = sum(entry.duration for entry in entries)
        longest = self._longest_listing
        for entry in entries:
            if longest.get(entry.uri, 0.0) < listed_seconds:
                longest[entry.uri] = listed_seconds
        target = playlist.target_duration(
            (entry.duration for entry in entries), minimum=self._target_duration
        )
        minimum = MIN_LISTED_TARGETS * target
        while len(entries) > self._window and (
            listed_seconds - entries[0].duration >= minimum
            or len(entries) > MAX_LISTED_SEGMENTS
        ):
            old = entries.pop(0)
            self._removed_discontinuities += old.discontinuity
            self._leaving.append((old, longest.pop(old.uri, listed_seconds)))
            listed_seconds -= old.duration
        while len(self._part_files) > PART_SEGMENTS_LISTED:
            deadline = self._media_seconds + PART_KEPT_TARGETS * target
            self._retired_parts.append((deadline, self._part_files.popleft()))

    def _remove_old_files(self) -> None:
        """Delete the segments and parts that left the playlist once their time is up.

        Also deletes init segments that no listed or kept segment needs.
        Called after the media playlist on disk is rewritten, so it never
        lists a deleted file.
        """
        now = self._media_seconds
        for old, listing in self._leaving:
            self._retired.append((now + old.duration + listing, old))
        self._leaving.clear()
        # Deadlines are not in order, because a later segment may have left
        # a shorter playlist. Beyond MAX_LISTED_SEGMENTS the oldest go.
        excess = len(self._retired) - MAX_LISTED_SEGMENTS
        remaining = []
        for index, (deadline, old) in enumerate(self._retired):
            if deadline <= now or index < excess:
                (self._rendition_directory / old.uri).unlink(missing_ok=True)
            else:
                remaining.append((deadline, old))
        self._retired = remaining
        retired_parts = self._retired_parts
        while retired_parts and (
            retired_parts[0][0] <= now or len(retired_parts) > MAX_LISTED_SEGMENTS
        ):
            for name in retired_parts.popleft()[1]:
                self._parts.pop(name, None)
        needed = {entry.map_uri for entry in self._entries}
        needed.update(entry.map_uri for _, entry in remaining)
        needed.add(self._init_names[-1])
        for name in [name for name in self._init_names if name not in needed]:
            (self._rendition_directory / name).unlink(missing_ok=True)
            self._init_names.remove(name)

    def _write_media_playlist(self, *, ended: bool) -> None:
        """Write the media playlist file.

        While the session runs it is the regular HLS playlist, without part
        tags. The ended playlist of a low-latency rendition keeps its tags
        and parts, as RFC 8216bis lets a playlist change only by growing,
        so the parts it lists are written out first.
        """
        low_latency = ended and self._part_duration is not None
        text = self._media_playlist(ended=ended, low_latency=low_latency)
        if low_latency:
            # The parts of the newest segments, as _media_playlist lists
            # them: a dozen or so files, once per session.
            listed = [
                part.uri
                for entry in self._entries[-PART_SEGMENTS_LISTED:]
                for part in entry.parts
            ]
            listed += [part.uri for part in self._open_parts]
            # Parts whose tags left the playlist lately must stay available
            # (RFC 8216bis), so they go to disk too.
            listed += [name for _, names in self._retired_parts for name in names]
            for name in listed:
                data = self._parts.get(name)
                if data is not None:
                    self._write_file(name, data)
        self._write_file("index.m3u8", text.encode())

    def _playlist_changed(self) -> None:
        self._live_playlists.clear()
        self.playlist_version += 1

    def _media_playlist(
        self,
        *,
        ended: bool,
        low_latency: bool,
        skip: playlist.SkipRequest | None = None,
    ) -> str:
        listed = self._entries
        self._target_duration = playlist.target_duration(
            (entry.duration for entry in listed), minimum=self._target_duration
        )
        tags = None
        if low_latency:
            # Only the newest complete segments keep their parts.
            cut = len(listed) - PART_SEGMENTS_LISTED
            listed = [
                replace(entry, parts=()) if i < cut and entry.parts else entry
                for i, entry in enumerate(listed)
            ]
            tags = self._low_latency()
        elif self._part_duration is not None:
            listed = [
                replace(entry, parts=()) if entry.parts else entry for entry in listed
            ]
        return playlist.media_playlist(
            listed,
            target_duration=self._target_duration,
            media_sequence=self._next_sequence - len(listed),
            discontinuity_sequence=self._removed_discontinuities,
            ended=ended,
            low_latency=tags,
            skip=skip,
        )

    def _low_latency(self) -> playlist.LowLatency:
        assert self._part_duration is not None
        open_segment = None
        if self._open_header is not None:
            open_segment = replace(self._open_header, parts=tuple(self._open_parts))
        next_part = f"part-{self._next_sequence}.{len(self._open_parts)}.m4s"
        return playlist.LowLatency(
            part_target=self._part_duration,
            part_hold_back=math.ceil(PART_HOLD_BACK_PARTS * self._part_duration * 1000)
            / 1000,
            open_segment=open_segment,
            preload_hint=next_part,
            rendition_reports=self._multivariant.rendition_reports(
                exclude=self._rendition
            ),
            skip_boundary=self.skip_boundary,
        )

    def _write_multivariant_playlist(self, source: VariantSource) -> None:
        needed = max(self._peak_bitrate, source.hinted_bitrate or 0)
        published = self._variant.bandwidth if self._variant is not None else 0
        if self._bandwidth_from_parts and self._total_seconds > 0:
            # The first complete segment replaces the estimate from parts,
            # which a keyframe-sized first part may have put far too high.
            published = 0
            self._bandwidth_from_parts = False
        if needed == 0 and self._total_seconds == 0:
            needed = self._open_bitrate()
            self._bandwidth_from_parts = True
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
            independent=self._independent,
        )
        if variant != self._variant:
            self._variant = variant
            self._multivariant.update(self._rendition, variant)

    def _open_bitrate(self) -> float:
        """Return the bit rate of the open segment's parts so far, or 0."""
        seconds = sum(part.duration for part in self._open_parts)
        if seconds <= 0:
            return 0.0
        return sum(len(data) for data in self._open_data) * 8 / seconds

    def _write_file(self, name: str, data: bytes) -> None:
        _write_atomically(self._rendition_directory / name, data)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
