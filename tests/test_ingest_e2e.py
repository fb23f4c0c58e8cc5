"""RTMP ingest to HLS, end to end, with PyAV and the ffmpeg CLI as publishers."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal

import pytest

from tests.box import (
    decode_file,
    download_hls,
    first_frame_is_keyframe,
    parse_sent,
    run_ffmpeg_publisher,
    run_publisher,
    start_box,
    start_publisher,
)

FPS = 25
SEGMENT_SECONDS = 2.0


def assert_monotonic(values: list[float]) -> None:
    for earlier, later in itertools.pairwise(values):
        assert later > earlier, f"timestamps not increasing: {earlier} then {later}"


async def check_hls_output(box, stream, tmp_path, sent_video, sent_audio, seconds):
    """Download the stream's HLS over HTTP and decode it with PyAV."""
    download = await download_hls(
        box.client, f"/hls/{stream['id']}/index.m3u8", tmp_path
    )
    assert "#EXT-X-ENDLIST" in download.media_playlist
    assert download.segment_files, download.media_playlist
    for segment in download.segment_files:
        if sent_video:
            assert first_frame_is_keyframe(segment), segment.name

    decoded = decode_file(download.joined_files[0])
    assert decoded.video_frames == sent_video
    assert_monotonic(decoded.video_pts)
    assert_monotonic(decoded.audio_pts)
    audio_frames_per_segment = SEGMENT_SECONDS * 44100 / 1024 + 1
    assert abs(decoded.audio_frames - sent_audio) <= audio_frames_per_segment
    assert abs(decoded.duration - seconds) <= SEGMENT_SECONDS
    return download, decoded


async def test_ingest_pyav_publisher_serves_hls(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()

    code, output = await run_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "6"
    )
    assert code == 0, output
    sent_video, sent_audio = parse_sent(output)
    assert sent_video == 6 * FPS

    status = await box.wait_for_status(stream["id"], "offline")
    assert status["started_at"] is not None
    assert status["duration_seconds"] >= 0

    download, decoded = await check_hls_output(
        box, stream, tmp_path / "dl", sent_video, sent_audio, 6
    )
    assert "avc1." in download.multivariant
    assert "mp4a.40.2" in download.multivariant
    assert "RESOLUTION=320x240" in download.multivariant
    assert "BANDWIDTH=" in download.multivariant
    assert decoded.width == 320


async def test_ingest_ffmpeg_cli_publisher_serves_hls(aiohttp_client, tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg CLI missing: .ci/run installs it with apt-get")
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()

    code, output = await run_ffmpeg_publisher(box.rtmp_url(stream["stream_key"]), 6)
    assert code == 0, output
    await box.wait_for_status(stream["id"], "offline")

    download = await download_hls(
        box.client, f"/hls/{stream['id']}/index.m3u8", tmp_path / "dl"
    )
    assert "#EXT-X-ENDLIST" in download.media_playlist
    decoded = decode_file(download.joined_files[0])
    assert decoded.video_frames == 6 * FPS
    assert_monotonic(decoded.video_pts)
    assert abs(decoded.duration - 6) <= SEGMENT_SECONDS

    # ffprobe reads the stream the way a player does: over HTTP, from the
    # multivariant playlist.
    url = str(box.client.make_url(f"/hls/{stream['id']}/index.m3u8"))
    probe = await asyncio.create_subprocess_exec(
        "ffprobe",
        "-v",
        "error",
        "-show_entries",
        "stream=codec_type,codec_name,width,height",
        "-of",
        "json",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(probe.communicate(), 60)
    assert probe.returncode == 0, stderr.decode()
    streams = {s["codec_type"]: s for s in json.loads(stdout)["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert streams["audio"]["codec_name"] == "aac"


@pytest.mark.parametrize(
    ("flag", "has_video"), [("--no-video", False), ("--no-audio", True)]
)
async def test_ingest_single_track_publisher(aiohttp_client, tmp_path, flag, has_video):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()

    url = box.rtmp_url(stream["stream_key"])
    code, output = await run_publisher(url, "--seconds", "5", flag)
    assert code == 0, output
    sent_video, sent_audio = parse_sent(output)
    await box.wait_for_status(stream["id"], "offline")

    download = await download_hls(
        box.client, f"/hls/{stream['id']}/index.m3u8", tmp_path / "dl"
    )
    decoded = decode_file(download.joined_files[0])
    if has_video:
        assert decoded.video_frames == sent_video
        assert decoded.audio_frames == 0
        assert "mp4a" not in download.multivariant
    else:
        assert decoded.video_frames == 0
        assert abs(decoded.audio_frames - sent_audio) <= 2 * 44100 / 1024 + 1
        assert "avc1" not in download.multivariant
    assert "#EXT-X-ENDLIST" in download.media_playlist


async def test_ingest_unknown_key_rejected(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()

    code, output = await run_publisher(box.rtmp_url("not-a-key"), "--seconds", "1")
    assert code != 0, output
    assert (await box.status(stream["id"]))["status"] == "created"


async def test_ingest_live_status_and_duplicate_rejected(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    url = box.rtmp_url(stream["stream_key"])

    first = await start_publisher(url, "--seconds", "8", "--realtime")
    try:
        live = await box.wait_for_status(stream["id"], "live")
        assert live["started_at"] is not None

        # The playlist is served within a few seconds of going live.
        for _ in range(100):
            response = await box.client.get(f"/hls/{stream['id']}/index.m3u8")
            if response.status == 200:
                break
            await asyncio.sleep(0.1)
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.content_type == "application/vnd.apple.mpegurl"

        code, output = await run_publisher(url, "--seconds", "2")
        assert code != 0, output
        assert (await box.status(stream["id"]))["status"] == "live"
    finally:
        output, _ = await asyncio.wait_for(first.communicate(), 60)
    assert first.returncode == 0, output
    status = await box.wait_for_status(stream["id"], "offline")
    assert status["duration_seconds"] >= 6


async def test_ingest_abrupt_disconnect_goes_offline(aiohttp_client, tmp_path):
    # Without a reconnect window, a dropped publisher ends the session at once.
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()

    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    await box.wait_for_status(stream["id"], "live")
    await asyncio.sleep(3)
    process.kill()
    await process.wait()

    await box.wait_for_status(stream["id"], "offline", timeout=10)
    playlist = (box.data_dir / "hls" / stream["id"]).glob("*/index.m3u8")
    texts = [path.read_text() for path in playlist]
    assert texts
    assert all("#EXT-X-ENDLIST" in text for text in texts)


async def test_ingest_silent_publisher_times_out(aiohttp_client, tmp_path):
    box = await start_box(
        aiohttp_client, tmp_path, rtmp_read_timeout=1.5, reconnect_window_seconds=0
    )
    stream = await box.create_stream()

    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "30", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live")
        process.send_signal(signal.SIGSTOP)
        await box.wait_for_status(stream["id"], "offline", timeout=10)
    finally:
        process.kill()
        await process.wait()


async def test_ingest_silent_publisher_taken_over(aiohttp_client, tmp_path):
    box = await start_box(
        aiohttp_client, tmp_path, rtmp_read_timeout=60, rtmp_takeover_after=1
    )
    stream = await box.create_stream()
    url = box.rtmp_url(stream["stream_key"])

    stalled = await start_publisher(url, "--seconds", "30", "--realtime")
    try:
        await box.wait_for_status(stream["id"], "live")
        first_started = (await box.status(stream["id"]))["started_at"]
        stalled.send_signal(signal.SIGSTOP)
        await asyncio.sleep(2)

        code, output = await run_publisher(url, "--seconds", "3")
        assert code == 0, output
        status = await box.wait_for_status(stream["id"], "offline")
        assert status["started_at"] >= first_started
    finally:
        stalled.kill()
        await stalled.wait()


async def test_ingest_reset_key_disconnects_publisher(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    old_url = box.rtmp_url(stream["stream_key"])

    process = await start_publisher(old_url, "--seconds", "30", "--realtime")
    try:
        await box.wait_for_status(stream["id"], "live")
        response = await box.client.post(
            f"/api/streams/{stream['id']}/reset-key", headers=box.auth
        )
        assert response.status == 200
        new_key = (await response.json())["stream_key"]
        assert new_key != stream["stream_key"]
        await box.wait_for_status(stream["id"], "offline", timeout=10)
        await asyncio.wait_for(process.wait(), 30)
        assert process.returncode != 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    code, output = await run_publisher(old_url, "--seconds", "1")
    assert code != 0, output
    code, output = await run_publisher(box.rtmp_url(new_key), "--seconds", "2")
    assert code == 0, output


async def test_ingest_deleted_stream_hls_removed(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    code, output = await run_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "3"
    )
    assert code == 0, output
    await box.wait_for_status(stream["id"], "offline")
    playlist_path = f"/hls/{stream['id']}/index.m3u8"
    assert (await box.client.get(playlist_path)).status == 200

    response = await box.client.delete(f"/api/streams/{stream['id']}", headers=box.auth)
    assert response.status == 204
    assert (await box.client.get(playlist_path)).status == 404
    assert not (box.data_dir / "hls" / stream["id"]).exists()
