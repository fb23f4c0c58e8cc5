"""Low-latency HLS test helpers: parse media playlists, check RFC 8216bis rules.

``parse_playlist`` reads a media playlist into segments with their parts,
the open segment's parts, the preload hint and the rendition reports.
``check_playlist`` asserts the rules of RFC 8216bis that a low-latency
media playlist must follow, one assert per rule. ``merge_delta_update``
applies a playlist delta update (EXT-X-SKIP) to an earlier playlist as a
client does. ``part_keyframes`` reads
the sync flags of the video samples of an fMP4 part.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

PART_NAME = re.compile(r"^part-(\d+)\.(\d+)\.m4s$")
ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
# Rounding slack per part when durations printed to 5 decimals are summed
# and compared with an EXTINF printed to 3.
SUM_TOLERANCE = 0.0015
VIDEO_TRACK_ID = 1


@dataclass
class Part:
    uri: str
    duration: float
    independent: bool

    @property
    def name(self) -> str:
        return urlsplit(self.uri).path.rsplit("/", 1)[-1]

    @property
    def position(self) -> tuple[int, int]:
        """(media sequence number, part index) that the part's name gives."""
        match = PART_NAME.match(self.name)
        assert match is not None, f"unexpected part name {self.uri}"
        return int(match.group(1)), int(match.group(2))


@dataclass
class Segment:
    msn: int
    uri: str
    duration: float
    parts: list[Part]
    program_date_time: datetime | None


@dataclass
class Playlist:
    text: str
    tags: dict[str, str] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    open_parts: list[Part] = field(default_factory=list)
    # Date of the open segment's first part, when the playlist gives it.
    open_date_time: datetime | None = None
    preload_hint: dict[str, str] | None = None
    reports: list[dict[str, str]] = field(default_factory=list)
    map_uri: str | None = None
    ended: bool = False
    # SKIPPED-SEGMENTS of a playlist delta update's EXT-X-SKIP tag.
    skipped: int = 0

    @property
    def target_duration(self) -> int:
        return int(self.tags["#EXT-X-TARGETDURATION"])

    @property
    def media_sequence(self) -> int:
        return int(self.tags["#EXT-X-MEDIA-SEQUENCE"])

    @property
    def part_target(self) -> float:
        return float(attributes(self.tags["#EXT-X-PART-INF"])["PART-TARGET"])

    @property
    def server_control(self) -> dict[str, str]:
        return attributes(self.tags["#EXT-X-SERVER-CONTROL"])

    @property
    def parts(self) -> list[Part]:
        """Every listed part, oldest first."""
        listed = [part for segment in self.segments for part in segment.parts]
        return listed + self.open_parts

    @property
    def open_msn(self) -> int:
        """Media sequence number of the segment after the complete ones."""
        return self.media_sequence + self.skipped + len(self.segments)

    def part(self, msn: int, index: int) -> Part | None:
        return next((p for p in self.parts if p.position == (msn, index)), None)

    def segment(self, msn: int) -> Segment | None:
        return next((s for s in self.segments if s.msn == msn), None)


def attributes(text: str) -> dict[str, str]:
    return {name: value.strip('"') for name, value in ATTRIBUTE.findall(text)}


def parse_playlist(text: str) -> Playlist:
    playlist = Playlist(text)
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    parts: list[Part] = []
    duration = None
    date_time = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if line.startswith("#EXT-X-PART:"):
            values = attributes(value)
            parts.append(
                Part(
                    values["URI"],
                    float(values["DURATION"]),
                    values.get("INDEPENDENT") == "YES",
                )
            )
        elif line.startswith("#EXTINF:"):
            duration = float(value.rstrip(","))
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            date_time = datetime.fromisoformat(value)
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            playlist.preload_hint = attributes(value)
        elif line.startswith("#EXT-X-RENDITION-REPORT:"):
            playlist.reports.append(attributes(value))
        elif line.startswith("#EXT-X-MAP:"):
            playlist.map_uri = attributes(value)["URI"]
        elif line == "#EXT-X-ENDLIST":
            playlist.ended = True
        elif line.startswith("#EXT-X-SKIP:"):
            playlist.skipped = int(attributes(value)["SKIPPED-SEGMENTS"])
        elif line.startswith("#"):
            playlist.tags[name] = value
        elif line.strip():
            assert duration is not None, f"URI {line} without EXTINF"
            msn = playlist.open_msn
            playlist.segments.append(Segment(msn, line, duration, parts, date_time))
            parts, duration, date_time = [], None, None
    playlist.open_parts = parts
    playlist.open_date_time = date_time
    return playlist


def split_playlist(text: str) -> tuple[list[str], dict[int, list[str]], list[str], int]:
    """Split a media playlist as a client that merges delta updates does.

    Returns the header tags (without EXT-X-VERSION and EXT-X-SKIP), the
    lines of each segment by media sequence number, the lines after the
    last segment, and SKIPPED-SEGMENTS. A segment's lines start with the
    EXT-X-MAP tag in effect for it, so segments compare by their init
    segment wherever the tag is written.
    """
    header: list[str] = []
    segments: dict[int, list[str]] = {}
    pending: list[str] = []
    current_map = None
    media_sequence = skipped = 0
    for line in text.splitlines()[1:]:
        if line.startswith("#EXT-X-VERSION:"):
            continue
        if line.startswith("#EXT-X-SKIP:"):
            skipped = int(line.split("SKIPPED-SEGMENTS=")[1].split(",")[0])
        elif line.startswith("#EXT-X-MAP:"):
            current_map = line
        elif line.startswith(
            ("#EXTINF:", "#EXT-X-PART:", "#EXT-X-DISCONTINUITY", "#EXT-X-PROGRAM")
        ) and not line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE"):
            pending.append(line)
        elif line.startswith(("#EXT-X-PRELOAD-HINT", "#EXT-X-RENDITION-REPORT")):
            pending.append(line)
        elif line.startswith("#"):
            header.append(line)
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                media_sequence = int(line.partition(":")[2])
        else:
            sequence = media_sequence + skipped + len(segments)
            segments[sequence] = [current_map or "", *pending, line]
            pending = []
    return header, segments, pending, skipped


def merge_delta_update(previous: str, delta: str) -> str:
    """Apply ``delta`` to the client's ``previous`` playlist; return the result.

    The skipped segments come from ``previous``, which must list them all.
    The result has the form that ``normalized_playlist`` returns.
    """
    _, old_segments, _, _ = split_playlist(previous)
    header, new_segments, tail, skipped = split_playlist(delta)
    first = min(new_segments) - skipped
    merged = {}
    for sequence in range(first, first + skipped):
        assert sequence in old_segments, f"skipped segment {sequence} is unknown"
        merged[sequence] = old_segments[sequence]
    merged.update(new_segments)
    return normalized(header, merged, tail)


def normalized(
    header: list[str], segments: dict[int, list[str]], tail: list[str]
) -> str:
    lines = list(header)
    for sequence in sorted(segments):
        lines.append(f"# segment {sequence}")
        lines.extend(segments[sequence])
    return "\n".join([*lines, *tail])


def normalized_playlist(text: str) -> str:
    header, segments, tail, skipped = split_playlist(text)
    assert skipped == 0
    return normalized(header, segments, tail)


def check_playlist(text: str) -> Playlist:
    """Parse a low-latency media playlist and assert the RFC 8216bis rules."""
    playlist = parse_playlist(text)
    part_target = playlist.part_target
    control = playlist.server_control

    assert control.get("CAN-BLOCK-RELOAD") == "YES"
    assert float(control["PART-HOLD-BACK"]) >= 3 * part_target - 1e-9
    assert float(control["HOLD-BACK"]) >= 3 * playlist.target_duration
    for part in playlist.parts:
        assert part.duration <= part_target, f"{part.uri} exceeds PART-TARGET"
        assert part.duration > 0, f"{part.uri} is empty"

    for segment in playlist.segments:
        rounded = math.floor(segment.duration + 0.5)
        assert rounded <= playlist.target_duration, f"{segment.uri} exceeds the target"
    # Segments may start mid-GOP (RFC 8216 only requires each one to continue
    # the previous), but not in a playlist that declares them independent.
    independent = "#EXT-X-INDEPENDENT-SEGMENTS" in text

    with_parts = [i for i, s in enumerate(playlist.segments) if s.parts]
    # Only the newest segments carry parts, and they do so without a hole.
    assert with_parts == list(range(len(playlist.segments)))[-len(with_parts) :]
    for segment in playlist.segments:
        if not segment.parts:
            continue
        total = sum(part.duration for part in segment.parts)
        tolerance = SUM_TOLERANCE * len(segment.parts)
        assert abs(total - segment.duration) <= tolerance, (
            f"parts of {segment.uri} sum to {total}, EXTINF is {segment.duration}"
        )
        assert {p.position[0] for p in segment.parts} == {segment.msn}
        indexes = [p.position[1] for p in segment.parts]
        assert indexes == list(range(len(indexes)))
        if independent:
            assert segment.parts[0].independent, f"{segment.uri} starts dependent"
    if playlist.open_parts:
        assert {p.position[0] for p in playlist.open_parts} == {playlist.open_msn}
        if independent:
            assert playlist.open_parts[0].independent

    if playlist.ended:
        assert playlist.preload_hint is None
        assert not playlist.open_parts
    else:
        hint = playlist.preload_hint
        assert hint is not None
        assert hint["TYPE"] == "PART"
        next_index = len(playlist.open_parts)
        hinted = Part(hint["URI"], 0.0, False)
        assert hinted.position == (playlist.open_msn, next_index)
    for report in playlist.reports:
        assert int(report["LAST-MSN"]) >= 0
        assert int(report["LAST-PART"]) >= 0
    return playlist


def constant_tags(playlist: Playlist) -> tuple[str, str, str]:
    """Return the tags that must not change within a session."""
    return (
        playlist.tags["#EXT-X-PART-INF"],
        playlist.tags["#EXT-X-SERVER-CONTROL"],
        playlist.tags["#EXT-X-TARGETDURATION"],
    )


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    result = []
    position = 0
    while position + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        assert size >= 8, f"invalid box size {size} at {position}"
        result.append((kind, data[position + 8 : position + size]))
        position += size
    return result


def part_keyframes(data: bytes) -> list[bool]:
    """Return the sync flag of each video sample in the moofs of ``data``."""
    flags = []
    for kind, moof in _boxes(data):
        if kind != b"moof":
            continue
        for child_kind, traf in _boxes(moof):
            if child_kind != b"traf":
                continue
            children = dict(_boxes(traf))
            (track_id,) = struct.unpack_from(">I", children[b"tfhd"], 4)
            if track_id == VIDEO_TRACK_ID:
                flags.extend(_trun_sync_flags(children[b"trun"]))
    return flags


def _trun_sync_flags(trun: bytes) -> list[bool]:
    (version_flags, count) = struct.unpack_from(">II", trun, 0)
    flags = version_flags & 0xFFFFFF
    position = 8
    if flags & 0x000001:
        position += 4  # data offset
    if flags & 0x000004:
        position += 4  # first sample flags
    entry_fields = [0x000100, 0x000200, 0x000400, 0x000800]
    sizes = [4 for bit in entry_fields if flags & bit]
    assert flags & 0x000400, "video trun without per-sample flags"
    flag_index = sum(1 for bit in entry_fields[:2] if flags & bit)
    result = []
    for _ in range(count):
        fields = struct.unpack_from(">" + "I" * len(sizes), trun, position)
        position += 4 * len(sizes)
        sample_flags = fields[flag_index]
        result.append(not sample_flags & 0x00010000)
    return result
