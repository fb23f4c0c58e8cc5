"""Access checks for a stream's HLS resources, and the viewer's playback session.

``authorize_hls`` checks one request against the stream's playback policy:

- public: anyone may fetch. A valid session signature, else a valid
  playback token, names the viewer. Without either, the box assigns a new
  session id on a fetch of the multivariant playlist. A player that opens a
  media playlist directly gets an id derived from its address and
  User-Agent, so that its reloads count as one viewer.
- signed: a playlist needs a valid session signature or playback token
  (``token`` query parameter or Bearer header). A session signature stays
  valid for ``playback_session_seconds`` after it was written, and on a
  media playlist also while its session keeps fetching media, so a player
  that reloads keeps playing after its token expired. A segment needs a
  session signature at most ``playback_session_seconds`` old, or a token.

Missing credentials get a 401; invalid, expired, revoked or other-stream
credentials a 403. Neither message contains the token. A segment with a
fresh session signature is served without a database query, and
``PlaybackAccessCache`` keeps each stream's policy and revocation generation
between requests until the next write to the database.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from realcast_box.api.client_address import client_ip
from realcast_box.api.errors import ApiError
from realcast_box.appkeys import CONFIG, DATABASE
from realcast_box.hls import playback
from realcast_box.hls.playback import InvalidPlayback, PlaybackSession
from realcast_box.hls.viewers import VIEWERS
from realcast_box.store import playback as playback_store
from realcast_box.store.db import Database

ANONYMOUS_ID_BYTES = 9
# Streams whose playback access is cached at once; the least recently used
# one goes first beyond it.
ACCESS_CACHE_SIZE = 4096
# How long a cached entry is used at most, in seconds. Writes through the
# box's own connection make every entry stale at once. This limit bounds how
# long a write by another process (the sqlite3 shell, a CLI command) goes
# unseen.
ACCESS_CACHE_SECONDS = 1.0
VERIFIED_SESSIONS_CACHED = 4096


class Resource(enum.Enum):
    MULTIVARIANT = "multivariant playlist"
    MEDIA_PLAYLIST = "media playlist"
    SEGMENT = "segment"


def classify(relative: str) -> Resource:
    """Return what kind of HLS resource the path below the stream's folder is."""
    if not relative.endswith(".m3u8"):
        return Resource.SEGMENT
    return Resource.MEDIA_PLAYLIST if "/" in relative else Resource.MULTIVARIANT


@dataclass(frozen=True)
class Grant:
    """A request allowed to proceed.

    ``session`` is the viewer's session, None for an unidentified fetch of a
    public stream. For a playlist its ``signed_at`` is now and its
    ``generation`` the stream's current one, ready to be signed into the
    playlist's URIs.
    """

    session: PlaybackSession | None


@dataclass(frozen=True)
class StreamAccess:
    """A stream's effective playback policy and its revocation generation."""

    policy: str
    generation: int


async def read_stream_access(db: Database, stream_id: str) -> StreamAccess | None:
    """Read the stream's access from the database, or None for an unknown stream."""
    row = await playback_store.get_playback_access(db, stream_id)
    if row is None:
        return None
    policy = playback.effective_policy(row.app_settings, row.stream_settings)
    return StreamAccess(policy, row.generation)


class PlaybackAccessCache:
    """Each stream's playback access, kept between requests.

    An entry is valid while the database's ``total_changes`` is the value it
    had before the entry was read, and for at most ``max_age`` seconds. So a
    stream that the API deletes, re-signs or revokes is checked against the
    new row on the next request. Streams that do not exist are not cached.
    """

    def __init__(
        self,
        *,
        max_entries: int = ACCESS_CACHE_SIZE,
        max_age: float = ACCESS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        # Stream id -> (total_changes when read, time read, access).
        self._entries: OrderedDict[str, tuple[int, float, StreamAccess]] = OrderedDict()

    async def get(self, db: Database, stream_id: str) -> StreamAccess | None:
        """Return the stream's access from the cache or the database, or None."""
        changes = db.total_changes
        now = self._clock()
        entry = self._entries.get(stream_id)
        if entry is not None:
            read_at_changes, read_at, access = entry
            if read_at_changes == changes and now - read_at < self.max_age:
                self._entries.move_to_end(stream_id)
                return access
            del self._entries[stream_id]
        access = await read_stream_access(db, stream_id)
        if access is None:
            return None
        # ``changes`` was read before the query, so a write that committed
        # while it ran makes this entry stale at once.
        self._entries[stream_id] = (changes, now, access)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return access


ACCESS_CACHE = web.AppKey("playback_access_cache", PlaybackAccessCache)


class _Check:
    """One request's inputs: keys, settings, credentials and the clock."""

    def __init__(self, request: web.Request, stream_id: str, resource: Resource):
        config = request.app[CONFIG]
        secret = request.app[playback.PLAYBACK_SECRET]
        self.request = request
        self.stream_id = stream_id
        self.resource = resource
        self.secret = secret
        self.session_key = playback.session_key(secret)
        self.session_seconds = config.playback_session_seconds
        self.leeway = config.playback_clock_leeway
        self.now = playback.unix_now()
        self.signature = request.query.get(playback.SESSION_PARAMETER)

    @functools.cached_property
    def token(self) -> str | None:
        # Read only when needed: a segment with a fresh session needs none.
        return self.request.query.get(playback.TOKEN_PARAMETER) or _bearer(self.request)

    def verified_session(self) -> PlaybackSession | None:
        """Return the session of a signature with a valid MAC, else None."""
        if not self.signature:
            return None
        try:
            return _verify_session(self.session_key, self.stream_id, self.signature)
        except InvalidPlayback:
            return None

    def is_fresh(self, session: PlaybackSession) -> bool:
        # A signature from the future only comes from a clock step back,
        # because only the box can sign. It counts as fresh for as long.
        age = self.now - session.signed_at
        return abs(age) <= self.session_seconds

    def renewed(self, session: PlaybackSession, generation: int) -> Grant:
        # The constructor, because dataclasses.replace costs several times more.
        return Grant(PlaybackSession(session.kind, session.key, self.now, generation))


async def authorize_hls(
    request: web.Request, stream_id: str, resource: Resource, headers: dict[str, str]
) -> Grant:
    """Check the request's access to the stream and return its Grant.

    Raises ApiError 401, 403 or 404 (an unknown stream) with ``headers``
    (the CORS headers) added.
    """
    check = _Check(request, stream_id, resource)
    if resource is Resource.SEGMENT:
        session = check.verified_session()
        if session is not None and check.is_fresh(session):
            return Grant(session)

    access = await request.app[ACCESS_CACHE].get(request.app[DATABASE], stream_id)
    if access is None:
        raise ApiError(404, f"stream not found: {stream_id}", headers=headers)
    if access.policy == playback.PUBLIC:
        return _public_grant(check, access.generation)
    return _signed_grant(check, access.generation, headers)


def _public_grant(check: _Check, generation: int) -> Grant:
    session = check.verified_session()
    if session is not None and (
        check.resource is not Resource.SEGMENT or check.is_fresh(session)
    ):
        return check.renewed(session, generation)
    if check.token:
        try:
            return _token_grant(check, generation)
        except InvalidPlayback:
            pass
    if check.resource is Resource.MULTIVARIANT:
        key = secrets.token_urlsafe(ANONYMOUS_ID_BYTES)
    elif check.resource is Resource.MEDIA_PLAYLIST:
        key = _client_session_id(check)
    else:
        return Grant(None)
    return Grant(
        PlaybackSession(playback.ANONYMOUS_SESSION, key, check.now, generation)
    )


def _signed_grant(check: _Check, generation: int, headers: dict[str, str]) -> Grant:
    if not check.signature and not check.token:
        raise ApiError(
            401,
            f"missing playback token: stream {check.stream_id} is signed; open the"
            f" playback_url from POST /api/streams/{check.stream_id}/playback-token,"
            " or send the token as 'Authorization: Bearer <token>'",
            headers={
                **headers,
                "WWW-Authenticate": 'Bearer realm="RealCast Box HLS"',
                "Cache-Control": "no-store",
            },
        )
    problem = "invalid playback token"
    if check.signature:
        try:
            return _session_grant(check, generation)
        except InvalidPlayback as exc:
            problem = str(exc)
    if check.token:
        try:
            return _token_grant(check, generation)
        except InvalidPlayback as exc:
            problem = str(exc)
    raise ApiError(403, problem, headers={**headers, "Cache-Control": "no-store"})


def _session_grant(check: _Check, generation: int) -> Grant:
    session = _verify_session(check.session_key, check.stream_id, check.signature or "")
    if session.kind != playback.TOKEN_SESSION:
        raise InvalidPlayback(
            "playback session was not started with a playback token; open the"
            " playback_url again"
        )
    # Players open the multivariant playlist once, with the token. Refusing
    # a bare session signature there means a signature copied out of a
    # playlist cannot start new playback after the token has expired.
    if check.resource is Resource.MULTIVARIANT:
        raise InvalidPlayback(
            "a playback session signature does not open the multivariant"
            " playlist; open the playback_url with a valid playback token"
        )
    if session.generation != generation:
        raise InvalidPlayback("playback session was revoked")
    if not check.is_fresh(session) and not _kept_alive(check, session):
        raise InvalidPlayback(
            "playback session expired; open the playback_url again with a valid"
            " playback token"
        )
    return check.renewed(session, generation)


# A player sends the signature of its last playlist with each of the
# playlist's segments, so most checks repeat one that was just made. The
# result depends on nothing but the arguments, and only signatures with a
# valid MAC, which the box wrote, are kept.
@functools.lru_cache(maxsize=VERIFIED_SESSIONS_CACHED)
def _verify_session(key: bytes, stream_id: str, signature: str) -> PlaybackSession:
    return playback.verify_session(key, stream_id, signature)


def _kept_alive(check: _Check, session: PlaybackSession) -> bool:
    """Return whether a media playlist's session still fetches media."""
    if check.resource is Resource.SEGMENT:
        return False
    tracker = check.request.app.get(VIEWERS)
    return tracker is not None and tracker.seen_within(
        check.stream_id, session.viewer_key, check.session_seconds
    )


def _token_grant(check: _Check, generation: int) -> Grant:
    token = playback.decode_playback_token(
        check.token or "",
        check.secret,
        stream_id=check.stream_id,
        generation=generation,
        leeway=check.leeway,
    )
    session = PlaybackSession(
        playback.TOKEN_SESSION, token.viewer_id, check.now, generation
    )
    return Grant(session)


def _client_session_id(check: _Check) -> str:
    """Derive a stable session id for a client that sent none."""
    client = "|".join(
        (
            check.stream_id,
            client_ip(check.request) or "",
            check.request.headers.get("User-Agent", ""),
        )
    )
    digest = hmac.new(check.session_key, client.encode(), hashlib.sha256).digest()
    return "c" + digest[:ANONYMOUS_ID_BYTES].hex()


def _bearer(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None
