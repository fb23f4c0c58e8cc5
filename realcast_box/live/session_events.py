"""The stream.live and stream.offline events of a publishing session."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from realcast_box.events import STREAM_LIVE, STREAM_OFFLINE, Event
from realcast_box.live.publication import Publication
from realcast_box.store.ids import format_timestamp


def client_host(client_address: str) -> str:
    """Return the host part of an RTMP client address "host:port"."""
    host, separator, port = client_address.rpartition(":")
    return host if separator and port.isdigit() else client_address


def live_event(
    stream: dict[str, Any], publication: Publication, client_address: str
) -> Event:
    """Return the stream.live event of a new session of ``stream`` (its row)."""
    return Event(
        STREAM_LIVE,
        publication.app_id,
        publication.stream_id,
        {
            "stream_key": stream["stream_key"],
            "title": stream["title"],
            "client_ip": client_host(client_address),
            "session_id": publication.session_id,
            "started_at": format_timestamp(publication.started_at),
        },
    )


def offline_event(publication: Publication, ended_at: datetime, reason: str) -> Event:
    """Return the stream.offline event of a session that ended at ``ended_at``."""
    duration = max(0, int((ended_at - publication.started_at).total_seconds()))
    return Event(
        STREAM_OFFLINE,
        publication.app_id,
        publication.stream_id,
        {
            "session_id": publication.session_id,
            "started_at": format_timestamp(publication.started_at),
            "ended_at": format_timestamp(ended_at),
            "duration_seconds": duration,
            "reason": reason,
        },
    )


# The reason given for sessions that a crash or power loss cut short.
UNFINISHED_SESSION_REASON = "the box stopped without ending the session"


def unfinished_session_event(row: dict[str, Any]) -> Event:
    """Return the stream.offline event of a session a crash left open.

    ``row`` is one of the rows that ``reset_live_streams`` changed at start-up.
    The session's id was never stored, so ``session_id`` is null.
    """
    return Event(
        STREAM_OFFLINE,
        row["app_id"],
        row["id"],
        {
            "session_id": None,
            "started_at": row["started_at"],
            "ended_at": row["ended_at"],
            "duration_seconds": row["duration_seconds"] or 0,
            "reason": UNFINISHED_SESSION_REASON,
        },
    )
