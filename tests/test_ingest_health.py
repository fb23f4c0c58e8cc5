"""Ingest health in the stream status: measurements and warnings.

The unit tests feed IngestHealth timestamps and sizes directly. The
end-to-end tests publish real H.264 and AAC with each problem (PyAV child
processes, or exact RTMP bytes from RawPublisher) and read the status API.
"""

from __future__ import annotations

import asyncio

import pytest

from realcast_box.live.health import (
    IngestHealth,
    IngestReport,
    ingest_warnings,
)
from tests.box import Box, start_box, start_publisher
from tests.flvfile import VIDEO_TAG, encode_flv, read_tags
from tests.test_hls_frame_timing import FAST_FRAMES, falling_fps_tags
from tests.test_ingest_raw import RawPublisher

# Unit tests.


def feed_steady(
    health: IngestHealth,
    seconds: float,
    *,
    fps: int = 25,
    gop: int = 25,
    start_ms: int = 0,
    audio: bool = True,
    video: bool = True,
) -> None:
    """Feed ``seconds`` of 4000-byte video frames and 200-byte AAC frames."""
    frames = round(seconds * fps)
    audio_time = 0.0
    for index in range(frames):
        time_ms = start_ms + index * 1000 // fps
        if video:
            health.add_video(
                time_ms, 4000, keyframe=index % gop == 0, composition_time=0
            )
        while audio and audio_time <= index / fps:
            health.add_audio(start_ms + int(audio_time * 1000), 200)
            audio_time += 1024 / 44100


def codes(report: IngestReport, **settings) -> set[str]:
    settings.setdefault("segment_duration", 2.0)
    return {warning.code for warning in ingest_warnings(report, **settings)}


def test_health_steady_feed_measurements():
    health = IngestHealth()
    feed_steady(health, 6)

    report = health.report(None, None)

    assert report.frame_rate == pytest.approx(25, abs=0.5)
    assert report.keyframe_interval_seconds == pytest.approx(1.0, abs=0.05)
    assert report.video_bitrate_kbps == pytest.approx(800, rel=0.05)
    assert report.audio_bitrate_kbps == pytest.approx(69, rel=0.05)
    assert report.bitrate_kbps == report.video_bitrate_kbps + report.audio_bitrate_kbps
    assert not report.b_frames
    assert codes(report) == set()


def test_health_nothing_measured_before_media():
    report = IngestHealth().report(None, None)

    assert report.frame_rate is None
    assert report.bitrate_kbps is None
    assert report.keyframe_interval_seconds is None
    assert codes(report) == set()


def test_health_long_gop_warns():
    health = IngestHealth()
    feed_steady(health, 12, gop=125)

    report = health.report(None, None)

    assert report.keyframe_interval_seconds == pytest.approx(5.0, abs=0.05)
    assert codes(report) == {"keyframe_interval_too_long"}


def test_health_first_gop_not_guessed():
    # One keyframe and 0.3 s of frames show nothing of a 2 s GOP.
    health = IngestHealth()
    feed_steady(health, 0.3, gop=50)

    assert health.report(None, None).keyframe_interval_seconds is None


def test_health_first_gop_long_reported():
    # Without a second keyframe, 6 s after the first is reported and warned.
    health = IngestHealth()
    feed_steady(health, 6, gop=1000)

    report = health.report(None, None)

    assert report.keyframe_interval_seconds == pytest.approx(6.0, abs=0.05)
    assert codes(report) == {"keyframe_interval_too_long"}


def test_health_gop_at_segment_duration_is_fine():
    health = IngestHealth()
    feed_steady(health, 8, gop=50)

    assert codes(health.report(None, None)) == set()


def test_health_keyframe_warning_clears():
    health = IngestHealth()
    feed_steady(health, 12, gop=125)
    feed_steady(health, 3, gop=25, start_ms=12_000)

    assert codes(health.report(None, None)) == set()


def test_health_missing_audio_warns():
    health = IngestHealth()
    feed_steady(health, 4, audio=False)

    assert codes(health.report(None, None)) == {"no_audio"}


def test_health_missing_video_warns():
    health = IngestHealth()
    feed_steady(health, 4, video=False)

    assert codes(health.report(None, None)) == {"no_video"}


def test_health_short_start_without_audio_is_fine():
    health = IngestHealth()
    feed_steady(health, 2, audio=False)

    assert codes(health.report(None, None)) == set()


def test_health_audio_that_stops_warns():
    health = IngestHealth()
    feed_steady(health, 3)
    feed_steady(health, 4, start_ms=3000, audio=False)

    assert codes(health.report(None, None)) == {"no_audio"}


def test_health_b_frames_warn_then_clear():
    health = IngestHealth()
    for index in range(50):
        health.add_video(index * 40, 1000, keyframe=index == 0, composition_time=80)
    with_b_frames = codes(health.report(None, None))
    for index in range(50, 250):
        health.add_video(index * 40, 1000, keyframe=index % 25 == 0, composition_time=0)

    assert "b_frames" in with_b_frames
    assert "b_frames" not in codes(health.report(None, None))


@pytest.mark.parametrize(
    ("raw", "jumped"),
    [
        (1000 + 60_000, True),  # forward past the jump threshold
        (1000 - 5000, True),  # backward
        (1040, False),  # the next frame
        (1000 - 100, False),  # small step back, within tolerance
    ],
)
def test_health_timestamp_jumps(raw, jumped):
    health = IngestHealth()
    health.add_audio(1000, 200)

    health.add_audio(raw, 200)

    assert health.report(None, None).timestamp_jumps == (1 if jumped else 0)


def test_health_timestamp_wrap_not_a_jump():
    health = IngestHealth()
    health.add_audio(2**32 - 20, 200)

    health.add_audio(3, 200)

    assert health.report(None, None).timestamp_jumps == 0


def test_health_bitrate_limit():
    health = IngestHealth()
    feed_steady(health, 6)
    report = health.report(None, None)

    assert codes(report, max_bitrate_kbps=500) == {"bitrate_above_limit"}
    assert codes(report, max_bitrate_kbps=1000) == set()
    assert codes(report, max_bitrate_kbps=None) == set()


def test_health_warnings_have_messages():
    report = IngestReport(
        keyframe_interval_seconds=6.0,
        b_frames=True,
        bitrate_kbps=9000,
        timestamp_jumps=2,
        video_gaps=3,
        video_missing=True,
        audio_missing=True,
    )

    warnings = ingest_warnings(report, segment_duration=2.0, max_bitrate_kbps=1000)

    assert len(warnings) == 7
    for warning in warnings:
        assert warning.message.endswith(".")
    assert "6.0 s" in warnings[0].message


def test_health_video_gaps_warns():
    assert codes(IngestReport(video_gaps=2)) == {"video_gaps"}
    assert codes(IngestReport()) == set()


# End to end.


async def wait_for_ingest(
    box: Box, stream_id: str, condition, timeout: float = 25.0
) -> dict:
    """Poll the status until ``condition(status)`` holds; return that status."""
    status = None
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        status = await box.status(stream_id)
        if status["ingest"] is not None and condition(status):
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"status never met the condition: {status}")


def warning_codes(status: dict) -> set[str]:
    return {warning["code"] for warning in status["ingest_warnings"]}


def measured(status: dict) -> bool:
    ingest = status["ingest"]
    return (
        ingest["bitrate_kbps"] is not None
        and ingest["frame_rate"] is not None
        and (ingest["keyframe_interval_seconds"] or 0) >= 0.9
    )


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


async def test_ingest_health_clean_publish(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()
    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        await wait_for_ingest(box, stream["id"], measured)
        # Past the time a missing track needs to show up.
        await asyncio.sleep(3.5)
        status = await box.status(stream["id"])
    finally:
        await stop_process(process)
    offline = await box.wait_for_status(stream["id"], "offline")

    ingest = status["ingest"]
    assert status["ingest_warnings"] == []
    assert ingest["video_codec"] == "h264"
    assert ingest["video_codec_string"].startswith("avc1.")
    assert ingest["audio_codec"] == "aac"
    assert ingest["audio_profile"] == "LC"
    assert ingest["audio_codec_string"] == "mp4a.40.2"
    assert ingest["audio_sample_rate"] == 44100
    assert (ingest["width"], ingest["height"]) == (320, 240)
    assert ingest["frame_rate"] == pytest.approx(25, abs=1)
    assert ingest["keyframe_interval_seconds"] == pytest.approx(1.0, abs=0.1)
    assert ingest["bitrate_kbps"] > 50
    assert ingest["b_frames"] is False
    assert offline["ingest"] is None
    assert offline["ingest_warnings"] == []


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        (["--gop", "125"], "keyframe_interval_too_long"),
        (["--bframes", "2"], "b_frames"),
        (["--no-audio"], "no_audio"),
        (["--no-video"], "no_video"),
    ],
)
async def test_ingest_health_publisher_problem_warns(
    aiohttp_client, tmp_path, flags, code
):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()
    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime", *flags
    )
    try:
        status = await wait_for_ingest(
            box, stream["id"], lambda status: code in warning_codes(status)
        )
    finally:
        await stop_process(process)

    assert warning_codes(status) == {code}
    warning = next(w for w in status["ingest_warnings"] if w["code"] == code)
    assert len(warning["message"]) > 40


@pytest.mark.parametrize("level", ["stream", "app"])
async def test_ingest_health_bitrate_above_limit(aiohttp_client, tmp_path, level):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()
    path = {
        "stream": f"/api/streams/{stream['id']}",
        "app": f"/api/apps/{stream['app_id']}",
    }[level]
    response = await box.client.put(
        path, json={"settings": {"max_bitrate_kbps": 50}}, headers=box.auth
    )
    assert response.status == 200, await response.text()
    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        status = await wait_for_ingest(
            box,
            stream["id"],
            lambda status: "bitrate_above_limit" in warning_codes(status),
        )
    finally:
        await stop_process(process)

    assert warning_codes(status) == {"bitrate_above_limit"}
    assert status["ingest"]["bitrate_kbps"] > 60


async def test_ingest_health_timestamp_jump_warns(aiohttp_client, tmp_path):
    first = read_tags(encode_flv(seconds=3))
    second = read_tags(encode_flv(seconds=3, first_frame=90))
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()

    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    try:
        await publisher.publish()
        await publisher.send_tags(first)
        clean = await wait_for_ingest(box, stream["id"], measured)
        # The second part's clock is a minute ahead of the first's.
        last_time = max(tag.timestamp for tag in first)
        await publisher.send_tags(second, offset_ms=last_time + 60_000)
        jumped = await wait_for_ingest(
            box, stream["id"], lambda status: status["ingest"]["timestamp_jumps"] > 0
        )
    finally:
        await publisher.close()

    assert warning_codes(clean) == set()
    assert warning_codes(jumped) == {"timestamp_jumps"}


async def test_ingest_health_keyframe_warning_clears(aiohttp_client, tmp_path):
    # A 5 s GOP first, then the encoder switches to a 1 s GOP.
    long_gop = read_tags(encode_flv(seconds=11, gop=150))
    short_gop = read_tags(encode_flv(seconds=3, gop=30, first_frame=330))
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()

    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    try:
        await publisher.publish()
        await publisher.send_tags(long_gop)
        warned = await wait_for_ingest(
            box,
            stream["id"],
            lambda status: "keyframe_interval_too_long" in warning_codes(status),
        )
        last_time = max(tag.timestamp for tag in long_gop)
        await publisher.send_tags(short_gop, offset_ms=last_time + 1000 // 30)
        cleared = await wait_for_ingest(
            box, stream["id"], lambda status: not status["ingest_warnings"]
        )
    finally:
        await publisher.close()

    assert warned["ingest"]["keyframe_interval_seconds"] == pytest.approx(5, abs=0.1)
    assert cleared["ingest"]["keyframe_interval_seconds"] == pytest.approx(1, abs=0.1)


async def test_ingest_health_video_gaps_warn(aiohttp_client, tmp_path):
    # 30 fps, then 2 fps after the first parts: each slow frame is a gap.
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()
    tags = falling_fps_tags()

    publisher = await RawPublisher.connect(box.rtmp_port, stream["stream_key"])
    try:
        await publisher.publish()
        await publisher.send_tags(tags)
        status = await wait_for_ingest(
            box, stream["id"], lambda status: status["ingest"]["video_gaps"] > 0
        )
    finally:
        await publisher.close()

    assert "video_gaps" in warning_codes(status)
    frames = sum(1 for tag in tags if tag.kind == VIDEO_TAG and tag.is_media_frame)
    assert status["ingest"]["video_gaps"] <= frames - FAST_FRAMES
