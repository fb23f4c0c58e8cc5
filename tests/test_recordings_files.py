"""Recording files: finalizing torn files, recovery at start, retention."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from realcast_box.events import RECORDING_FAILED, RECORDING_READY, EventBus
from realcast_box.live.recordings import RecordingService, should_record
from realcast_box.media import recording as media
from realcast_box.store import apps as app_store
from realcast_box.store import recordings as recording_store
from realcast_box.store import streams as stream_store
from realcast_box.store import users as user_store
from realcast_box.store.ids import format_timestamp, new_id, utc_now
from tests.box import decode_file

pytestmark = pytest.mark.timeout(120)


def make_fragmented_mp4(path: Path, seconds: float) -> None:
    """Write fragmented MP4 (1 s fragments) of test video and a tone with ffmpeg."""
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=160x120:rate=25:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-movflags",
        "frag_keyframe+empty_moov+default_base_moof",
        "-frag_duration",
        "1000000",
        str(path),
    ]
    subprocess.run(command, check=True, timeout=60)


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "fragmented.mp4"
    make_fragmented_mp4(path, 4)
    return path


def copy_of(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def test_finalize_fast_start(fragmented, tmp_path):
    part = copy_of(fragmented, tmp_path / "rec.part.mp4")
    result = media.finalize(part, tmp_path / "rec.mp4")
    assert abs(result.duration - 4) < 0.2
    assert result.file_size == (tmp_path / "rec.mp4").stat().st_size
    data = (tmp_path / "rec.mp4").read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    decoded = decode_file(tmp_path / "rec.mp4")
    assert decoded.video_frames == 100
    assert decoded.audio_frames > 0


def test_finalize_cuts_torn_fragment(fragmented, tmp_path):
    part = copy_of(fragmented, tmp_path / "rec.part.mp4")
    whole = part.stat().st_size
    os.truncate(part, whole - 500)
    result = media.finalize(part, tmp_path / "rec.mp4")
    assert part.stat().st_size == media.complete_length(part)
    assert part.stat().st_size < whole - 500
    assert 2 <= result.duration < 4
    assert decode_file(tmp_path / "rec.mp4").video_frames > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no complete MP4 box"),
        (b"\x00\x00\x00\x08ftyp", "FFmpeg cannot read the file"),
        (b"garbage that is not an mp4 file at all", "no complete MP4 box"),
    ],
)
def test_finalize_unreadable(tmp_path, content, message):
    part = tmp_path / "rec.part.mp4"
    part.write_bytes(content)
    with pytest.raises(media.RecordingFileError, match=message):
        media.finalize(part, tmp_path / "rec.mp4")
    assert not (tmp_path / "rec.mp4").exists()


def test_finalize_missing_file(tmp_path):
    with pytest.raises(media.RecordingFileError, match="missing"):
        media.finalize(tmp_path / "none.part.mp4", tmp_path / "none.mp4")


def test_thumbnail_is_jpeg(fragmented, tmp_path):
    media.finalize(copy_of(fragmented, tmp_path / "a.part.mp4"), tmp_path / "a.mp4")
    assert media.make_thumbnail(tmp_path / "a.mp4", tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    assert data[:2] == b"\xff\xd8"
    assert data[-2:] == b"\xff\xd9"


@pytest.mark.parametrize(
    ("app_settings", "stream_settings", "expected"),
    [
        ({"recording_enabled": True}, {}, True),
        ({"recording_enabled": True}, {"recording": False}, False),
        ({"recording_enabled": False}, {"recording": True}, True),
        ({}, {}, False),
        ({"recording_enabled": "yes"}, {"recording": "no"}, False),
        (None, None, False),
    ],
)
def test_should_record_stream_wins(app_settings, stream_settings, expected):
    assert should_record(app_settings, stream_settings) is expected


async def insert_recording(
    database, status: str, *, created_at=None, stream_id=None, app_id=None
) -> str:
    recording_id = new_id("rec")
    await recording_store.create_recording(
        database,
        {
            "id": recording_id,
            "app_id": app_id,
            "stream_id": stream_id,
            "title": "Old show",
            "description": "",
            "source": "live",
            "stream_url": None,
            "created_at": format_timestamp(created_at or utc_now()),
        },
    )
    if status != "recording":
        await database.execute(
            "UPDATE recordings SET status = ? WHERE id = ?", (status, recording_id)
        )
    return recording_id


@pytest.fixture
async def owned_streams(database):
    """Return a function that makes a new stream and returns (app_id, stream_id)."""
    user = await user_store.create_user(database, "rec@example.com", "Rec", "hash")

    async def make() -> tuple[str, str]:
        app = await app_store.create_app(database, user["id"], "A", "", {})
        stream = await stream_store.create_stream(database, app["id"], "S", "", {})
        return app["id"], stream["id"]

    return make


def service(config, database, hub, events=None, **overrides) -> RecordingService:
    settings = {"min_free_bytes": 0, "retention_days": 0, **overrides}
    return RecordingService(
        database,
        hub,
        events or EventBus(),
        config.data_path / "recordings",
        **settings,
    )


async def test_recovery_finalizes_or_fails(
    config, database, hub, fragmented, owned_streams
):
    directory = config.data_path / "recordings"
    directory.mkdir(parents=True)
    ids = {}
    for name in ("readable", "garbage", "missing"):
        app_id, stream_id = await owned_streams()
        ids[name] = await insert_recording(
            database, "recording", app_id=app_id, stream_id=stream_id
        )
    copy_of(fragmented, directory / f"{ids['readable']}.part.mp4")
    (directory / f"{ids['garbage']}.part.mp4").write_bytes(b"\x00\x00\x00\x04")
    events = EventBus()
    seen = []

    async def collect(event):
        seen.append((event.type, event.data["recording_id"]))

    events.subscribe(collect)
    recordings = service(config, database, hub, events)
    await recordings.start()
    await recordings.close()

    readable = await recording_store.get_recording(database, ids["readable"])
    assert readable["status"] == "completed"
    assert abs(readable["duration"] - 4) < 0.2
    assert readable["has_thumbnail"]
    assert (directory / f"{ids['readable']}.mp4").exists()
    assert not (directory / f"{ids['readable']}.part.mp4").exists()
    garbage = await recording_store.get_recording(database, ids["garbage"])
    assert garbage["status"] == "failed"
    assert garbage["failure_reason"].startswith("unreadable:")
    missing = await recording_store.get_recording(database, ids["missing"])
    assert missing["status"] == "failed"
    assert "missing" in missing["failure_reason"]
    assert (RECORDING_READY, ids["readable"]) in seen
    assert (RECORDING_FAILED, ids["garbage"]) in seen


async def test_recovery_after_remux_before_update(
    config, database, hub, fragmented, owned_streams
):
    directory = config.data_path / "recordings"
    directory.mkdir(parents=True)
    app_id, stream_id = await owned_streams()
    recording_id = await insert_recording(
        database, "processing", app_id=app_id, stream_id=stream_id
    )
    part = copy_of(fragmented, tmp := directory / "source.part.mp4")
    media.finalize(part, directory / f"{recording_id}.mp4")
    tmp.unlink()
    recordings = service(config, database, hub)
    await recordings.start()
    await recordings.close()
    row = await recording_store.get_recording(database, recording_id)
    assert row["status"] == "completed"
    assert abs(row["duration"] - 4) < 0.2


async def test_retention_prunes_old_and_orphans(config, database, hub, owned_streams):
    directory = config.data_path / "recordings"
    directory.mkdir(parents=True)
    app_id, stream_id = await owned_streams()
    old = await insert_recording(
        database,
        "completed",
        created_at=utc_now() - timedelta(days=8),
        app_id=app_id,
        stream_id=stream_id,
    )
    recent = await insert_recording(
        database, "failed", app_id=app_id, stream_id=stream_id
    )
    for recording_id in (old, recent):
        (directory / f"{recording_id}.mp4").write_bytes(b"data")
        (directory / f"{recording_id}.jpg").write_bytes(b"data")
    stale_orphan = directory / "rec_00000000000000aa.mp4"
    fresh_orphan = directory / "rec_00000000000000bb.part.mp4"
    other_file = directory / "notes.txt"
    for path in (stale_orphan, fresh_orphan, other_file):
        path.write_bytes(b"data")
    an_hour_ago = time.time() - 3600
    os.utime(stale_orphan, (an_hour_ago, an_hour_ago))
    os.utime(other_file, (an_hour_ago, an_hour_ago))
    recordings = service(config, database, hub, retention_days=7)
    await recordings.start()
    deleted = await recordings.prune()
    await recordings.close()

    assert deleted == 0  # the run at start already deleted it
    assert await recording_store.get_recording(database, old) is None
    assert not (directory / f"{old}.mp4").exists()
    assert not (directory / f"{old}.jpg").exists()
    assert await recording_store.get_recording(database, recent) is not None
    assert (directory / f"{recent}.mp4").exists()
    assert not stale_orphan.exists()
    assert fresh_orphan.exists()
    assert other_file.exists()


async def test_retention_zero_keeps_everything(config, database, hub, owned_streams):
    app_id, stream_id = await owned_streams()
    old = await insert_recording(
        database,
        "completed",
        created_at=utc_now() - timedelta(days=3650),
        app_id=app_id,
        stream_id=stream_id,
    )
    recordings = service(config, database, hub, retention_days=0)
    await recordings.start()
    await recordings.close()
    assert await recording_store.get_recording(database, old) is not None


async def test_one_active_recording_per_stream(database, owned_streams):
    app_id, stream_id = await owned_streams()
    await insert_recording(database, "recording", app_id=app_id, stream_id=stream_id)
    with pytest.raises(recording_store.ActiveRecordingExists):
        await insert_recording(
            database, "recording", app_id=app_id, stream_id=stream_id
        )


def test_audio_only_has_no_thumbnail(tmp_path):
    part = tmp_path / "audio.part.mp4"
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=3",
        "-c:a",
        "aac",
        "-movflags",
        "frag_keyframe+empty_moov+default_base_moof",
        "-frag_duration",
        "1000000",
        str(part),
    ]
    subprocess.run(command, check=True, timeout=60)
    result = media.finalize(part, tmp_path / "audio.mp4")
    assert abs(result.duration - 3) < 0.1
    assert not media.make_thumbnail(tmp_path / "audio.mp4", tmp_path / "audio.jpg")
    assert not (tmp_path / "audio.jpg").exists()
    assert decode_file(tmp_path / "audio.mp4").audio_frames > 0
