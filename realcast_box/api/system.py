"""Routes under /api/system: facts about the box itself, such as its encoders.

GET /api/system/encoders returns the H.264 encoder probe that app.py runs at
start. Any user may read it; an API key needs profiles:read, the scope of
the profiles whose GPU setting depends on it.
"""

from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web

from realcast_box.api.identity import authorize
from realcast_box.media.encoders import (
    SOFTWARE_ENCODER,
    EncoderStatus,
    choose_encoder,
    probe_encoders_async,
)

routes = web.RouteTableDef()


class EncoderCache:
    """The H.264 encoder probe result, filled once per application."""

    def __init__(self) -> None:
        self.statuses: list[EncoderStatus] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> list[EncoderStatus]:
        """Return the probe result, probing first if nothing has filled it yet.

        app.py fills it at start. Applications built without that start
        sequence (tests, tools) probe on the first request instead.
        """
        async with self._lock:
            if self.statuses is None:
                self.statuses = await probe_encoders_async()
        return self.statuses

    async def choose(self, enable_gpu_acceleration: bool) -> str | None:
        """Return the hardware encoder a profile gets, or None for libx264."""
        name = choose_encoder(await self.get(), enable_gpu_acceleration)
        return None if name == SOFTWARE_ENCODER else name


ENCODERS = web.AppKey("encoders", EncoderCache)


@routes.get("/api/system/encoders")
async def list_encoders(request: web.Request) -> web.Response:
    await authorize(request, "profiles:read")
    statuses = await request.app[ENCODERS].get()
    return web.json_response([dataclasses.asdict(status) for status in statuses])
