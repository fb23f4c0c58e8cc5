"""Typed keys for the state that app.py puts on the aiohttp Application."""

from __future__ import annotations

from aiohttp import web

from realcast_box.config import Config
from realcast_box.live.hub import Hub
from realcast_box.live.recordings import RecordingService
from realcast_box.rtmp.server import RtmpServer
from realcast_box.store.db import Database

CONFIG = web.AppKey("config", Config)
DATABASE = web.AppKey("database", Database)
HUB = web.AppKey("hub", Hub)
# Secret for user access tokens (HS256), read from the data directory.
JWT_SECRET = web.AppKey("jwt_secret", bytes)
RECORDINGS = web.AppKey("recordings", RecordingService)
RTMP_SERVER = web.AppKey("rtmp_server", RtmpServer)
