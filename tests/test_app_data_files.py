"""The data directory and database files are private to the box's user."""

from __future__ import annotations

import stat

from tests.box import start_box


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_app_data_directory_is_private(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    assert mode(box.data_dir) == 0o700


async def test_app_database_files_are_private(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    files = sorted(box.data_dir.glob("realcast.db*"))
    assert files[0].name == "realcast.db"
    for path in files:
        assert mode(path) == 0o600, path.name
