"""A recording survives SIGKILL of the server: the next start recovers it."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.box import decode_file, start_publisher
from tests.test_cli import ServeProcess

pytestmark = pytest.mark.timeout(180)

ACCOUNT = {"email": "crash@example.com", "password": "long enough pw"}
# Media seconds recorded before the kill, at least.
RECORDED_SECONDS = 5.0


async def setup_stream(session: aiohttp.ClientSession, base: str) -> tuple[dict, dict]:
    async with session.post(f"{base}/api/auth/register", json=ACCOUNT) as response:
        assert response.status == 201, await response.text()
    async with session.post(f"{base}/api/auth/login", json=ACCOUNT) as response:
        token = (await response.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    app = {"name": "crash", "settings": {"recording_enabled": True}}
    async with session.post(f"{base}/api/apps", json=app, headers=headers) as response:
        app_id = (await response.json())["id"]
    body = {"app_id": app_id, "title": "Long show"}
    async with session.post(
        f"{base}/api/streams", json=body, headers=headers
    ) as response:
        assert response.status == 201, await response.text()
        stream = await response.json()
    return stream, headers


async def wait_for_part_file(recordings: Path, seconds: float) -> Path:
    """Wait until a recording file exists and ``seconds`` more have passed."""
    deadline = time.monotonic() + 60
    while not list(recordings.glob("rec_*.part.mp4")):
        assert time.monotonic() < deadline, "no recording file appeared"
        await asyncio.sleep(0.1)
    await asyncio.sleep(seconds)
    return next(recordings.glob("rec_*.part.mp4"))


async def test_recordings_recovered_after_sigkill(tmp_path):
    data_dir = tmp_path / "data"
    async with aiohttp.ClientSession() as session:
        server = ServeProcess(data_dir)
        publisher = None
        try:
            await server.wait_ready(session)
            stream, headers = await setup_stream(session, server.base_url)
            url = f"rtmp://127.0.0.1:{server.rtmp_port}/live/{stream['stream_key']}"
            publisher = await start_publisher(url, "--seconds", "60", "--realtime")
            part = await wait_for_part_file(data_dir / "recordings", RECORDED_SECONDS)
        finally:
            server.terminate(signal.SIGKILL)
            if publisher is not None:
                publisher.kill()
                await publisher.wait()
        recording_id = part.name.removesuffix(".part.mp4")
        assert part.stat().st_size > 0

        server = ServeProcess(data_dir)
        try:
            await server.wait_ready(session)
            item = f"{server.base_url}/api/recordings/{recording_id}"
            deadline = time.monotonic() + 60
            while True:
                async with session.get(item, headers=headers) as response:
                    assert response.status == 200, await response.text()
                    recording = await response.json()
                if recording["status"] in ("completed", "failed"):
                    break
                assert time.monotonic() < deadline, recording
                await asyncio.sleep(0.1)
            async with session.get(
                f"{server.base_url}/vod/{recording_id}.mp4"
            ) as response:
                assert response.status == 200
                vod = tmp_path / "recovered.mp4"
                vod.write_bytes(await response.read())
        finally:
            server.terminate()

    assert recording["status"] == "completed", recording
    assert recording["duration"] >= RECORDED_SECONDS - 2
    assert not part.exists()
    decoded = decode_file(vod)
    assert decoded.video_frames > 0
    assert decoded.audio_frames > 0
    assert abs(decoded.duration - recording["duration"]) < 1
