"""Unit tests of the follower packager and the shared multivariant playlist."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from realcast_box.hls.follower import FollowerPackager
from realcast_box.hls.output import Multivariant
from realcast_box.hls.playlist import VariantEntry
from realcast_box.media.ladder import Cut
from realcast_box.media.transcode import EncodedAudio, EncodedVideo
from tests.test_media_transcode import encode_source

FRAME = 3600  # 25 fps at 90 kHz


def make_packager(directory: Path, multivariant: Multivariant | None = None):
    return FollowerPackager(
        directory,
        "sd-test",
        target_duration=1.0,
        window=10,
        multivariant=multivariant or Multivariant(directory),
        bitrate=200_000,
        frame_rate=25,
        source_segment=lambda sequence: (1.0, sequence == 7),
        wall_time=lambda seconds: datetime.fromtimestamp(1e9 + seconds, UTC),
        log_name="test/sd",
    )


def video_packets(count: int, cuts: dict[int, Cut], first: int = 0):
    config, packets = encode_source(160, 120, count, gop=25)
    return [
        EncodedVideo(
            "sd", config, (first + index) * FRAME, data, index in cuts, cuts.get(index)
        )
        for index, (_, data, _) in enumerate(packets)
    ]


def playlist(directory: Path) -> str:
    return (directory / "sd-test" / "index.m3u8").read_text()


def test_follower_numbers_segments_as_the_source(tmp_path):
    packager = make_packager(tmp_path)
    for packet in video_packets(50, {0: Cut(100, False), 25: Cut(101, False)}):
        packager.add_video(packet)
    packager.finish()
    text = playlist(tmp_path)
    assert "#EXT-X-MEDIA-SEQUENCE:100" in text
    assert "seg-100.m4s" in text
    assert "seg-101.m4s" in text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")


def test_follower_lists_missing_segments_as_gaps(tmp_path):
    packager = make_packager(tmp_path)
    packets = video_packets(75, {0: Cut(5, False), 25: Cut(6, False), 50: Cut(8, True)})
    for packet in packets[:40]:
        packager.add_video(packet)
    packager.drop_open_segment()
    for packet in packets[50:]:
        packager.add_video(packet)
    packager.finish()
    text = playlist(tmp_path)
    lines = text.splitlines()
    # Segment 5 was written; 6 (dropped) and 7 are gaps; 7 carries the
    # source's discontinuity and 8 its own.
    assert lines.count("#EXT-X-GAP") == 2
    gap_uris = [lines[i + 2] for i, line in enumerate(lines) if line == "#EXT-X-GAP"]
    assert gap_uris == ["seg-6.m4s", "seg-7.m4s"]
    assert not (tmp_path / "sd-test" / "seg-6.m4s").exists()
    assert lines.count("#EXT-X-DISCONTINUITY") == 2
    assert (tmp_path / "sd-test" / "seg-8.m4s").exists()


def test_follower_end_segment_closes_open_segment(tmp_path):
    packager = make_packager(tmp_path)
    for packet in video_packets(10, {0: Cut(3, False)}):
        packager.add_video(packet)
    packager.end_segment()
    assert "seg-3.m4s" in playlist(tmp_path)


def test_follower_puts_audio_in_the_segment_of_its_time(tmp_path):
    packager = make_packager(tmp_path)
    from realcast_box.media.codecs import parse_aac_config

    config = parse_aac_config(b"\x11\x90")  # AAC LC, 48 kHz, stereo
    # Audio runs ahead of video, as it does out of the transcoder.
    for index in range(100):
        packager.add_audio(EncodedAudio(config, index * 1024, b"\x21\x00"))
    for packet in video_packets(50, {0: Cut(0, False), 25: Cut(1, False)}):
        packager.add_video(packet)
    packager.finish()
    assert packager.files.segment_count == 2


def test_multivariant_waits_for_expected_renditions(tmp_path):
    multivariant = Multivariant(tmp_path)
    multivariant.expect(["source", "sd"])
    entry = VariantEntry("source/index.m3u8", 1000, ("avc1.64001f",))
    multivariant.update("source", entry)
    assert not (tmp_path / "index.m3u8").exists()
    multivariant.update("sd", VariantEntry("sd/index.m3u8", 500, ("avc1.64000d",)))
    text = (tmp_path / "index.m3u8").read_text()
    assert text.index("source/index.m3u8") < text.index("sd/index.m3u8")


def test_multivariant_release_writes_what_is_there(tmp_path):
    multivariant = Multivariant(tmp_path)
    multivariant.expect(["source", "sd"])
    multivariant.update("source", VariantEntry("source/index.m3u8", 1000, ("a",)))
    multivariant.release()
    assert "sd/" not in (tmp_path / "index.m3u8").read_text()


def test_multivariant_remove_leaves_variant_out(tmp_path):
    multivariant = Multivariant(tmp_path)
    multivariant.update("source", VariantEntry("source/index.m3u8", 1000, ("a",)))
    multivariant.update("sd", VariantEntry("sd/index.m3u8", 500, ("a",)))
    multivariant.remove("sd")
    assert "sd/" not in (tmp_path / "index.m3u8").read_text()
