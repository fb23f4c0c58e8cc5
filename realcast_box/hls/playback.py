"""Playback tokens, playback session signatures and playlist URI rewriting.

A playback token is an HS256 JWT for one stream and one viewer, signed with
the playback secret (a file of its own in the data directory, never the
secret of user access tokens). On a stream whose ``playback_policy`` is
``signed``, a valid token starts playback. The box then writes a playback
session signature into every URI of each playlist it serves, as the
``session`` query parameter, and writes a fresh one on every reload. So a
player that cannot send headers keeps playing after the token expires, for
as long as it keeps reloading, and a URI copied out of a playlist stops
working shortly after its session ends.

A session signature is a compact HMAC-SHA256 token, not a JWT: the viewer,
the time it was signed and the stream's revocation generation, bound to the
stream id. Revoking a stream's tokens raises its generation, which makes
every earlier token and session signature of that stream invalid.

The functions here do no I/O: hls/access.py and api/playback.py supply the
secret, the time and the generation.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from aiohttp import web

from realcast_box.errors import RealcastError

PUBLIC = "public"
SIGNED = "signed"
PLAYBACK_POLICIES = (PUBLIC, SIGNED)
DEFAULT_POLICY = PUBLIC

JWT_ALGORITHM = "HS256"
# Marks a JWT as a playback token. User access tokens carry another audience
# and are signed with another secret, so neither passes for the other.
PLAYBACK_TOKEN_AUDIENCE = "realcast-box:playback"
MIN_EXPIRY_MINUTES = 1
MAX_EXPIRY_MINUTES = 1440
DEFAULT_EXPIRY_MINUTES = 60
MAX_VIEWER_ID_LENGTH = 128

# Query parameters of HLS requests.
TOKEN_PARAMETER = "token"
SESSION_PARAMETER = "session"

# Kinds of session: one started by a playback token (the key is its
# viewer_id) or one the box assigned to an anonymous viewer of a public
# stream (the key is a random id).
TOKEN_SESSION = "v"
ANONYMOUS_SESSION = "s"
SESSION_FORMAT_VERSION = 1
# 16 bytes of HMAC-SHA256 are 22 characters of unpadded base64url.
SESSION_MAC_BYTES = 16
SESSION_MAC_LENGTH = 22
MAX_SESSION_LENGTH = 512
SESSION_KEY_LABEL = b"realcast-box playback session signatures v1"

# Secret for playback tokens and session signatures, created in the data
# directory on first start (mode 0600) and read from there at every start.
PLAYBACK_SECRET = web.AppKey("playback_secret", bytes)
PLAYBACK_SECRET_FILE = "playback-secret.key"

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
# A URI="..." attribute of a playlist tag (EXT-X-MAP, EXT-X-MEDIA, ...).
_URI_ATTRIBUTE = re.compile(r'(?<![A-Z0-9-])URI="([^"]*)"')
# A URI with a scheme ("https:", "data:") or a network path ("//host/...").
_ABSOLUTE_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:|//)")


class InvalidPlayback(RealcastError):
    """A playback token or session signature is invalid, expired or revoked."""


@dataclass(frozen=True)
class PlaybackToken:
    """The claims of a valid playback token."""

    stream_id: str
    viewer_id: str
    generation: int
    expires_at: datetime


@dataclass(frozen=True)
class PlaybackSession:
    """One viewer's playback session, as a session signature carries it.

    ``kind`` is TOKEN_SESSION (``key`` is the token's viewer_id) or
    ANONYMOUS_SESSION (``key`` is an id the box assigned). ``signed_at`` is
    the Unix time of the signature.
    """

    kind: str
    key: str
    signed_at: int
    generation: int

    @property
    def viewer_key(self) -> str:
        """Key under which viewers are counted: one per viewer_id or session id."""
        return f"{self.kind}:{self.key}"


def effective_policy(app_settings: object, stream_settings: object) -> str:
    """Return the stream's playback policy: its own, else its app's, else public."""
    for settings in (stream_settings, app_settings):
        if isinstance(settings, dict):
            policy = settings.get("playback_policy")
            if policy in PLAYBACK_POLICIES:
                return policy
    return DEFAULT_POLICY


def create_playback_token(
    secret: bytes,
    stream_id: str,
    viewer_id: str,
    *,
    generation: int,
    expiry_minutes: int,
    now: datetime,
) -> tuple[str, datetime]:
    """Return a signed playback token and the time it expires.

    ``now`` should be truncated to whole seconds, so the returned time equals
    the token's ``exp`` claim.
    """
    expires_at = now + timedelta(minutes=expiry_minutes)
    claims = {
        "aud": PLAYBACK_TOKEN_AUDIENCE,
        "sub": viewer_id,
        "stream_id": stream_id,
        "gen": generation,
        "iat": now,
        "exp": expires_at,
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM), expires_at


def decode_playback_token(
    token: str, secret: bytes, *, stream_id: str, generation: int, leeway: float
) -> PlaybackToken:
    """Verify a playback token for ``stream_id`` and return its claims.

    Raises InvalidPlayback for a malformed or tampered token, one that is not
    HS256 (``alg: none`` included), a user access token, a token of another
    stream, an expired one (``leeway`` seconds of clock skew allowed), and a
    token issued before the stream's last revocation.
    """
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            audience=PLAYBACK_TOKEN_AUDIENCE,
            leeway=leeway,
            options={"require": ["sub", "aud", "iat", "exp", "stream_id", "gen"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidPlayback("playback token has expired") from None
    except jwt.InvalidAudienceError:
        raise InvalidPlayback("token is not a playback token") from None
    except jwt.InvalidSignatureError:
        # A user access token, or a token of another box, ends up here.
        raise InvalidPlayback(
            "invalid playback token: its signature does not match this box's"
            " playback secret; use the playback_token from"
            f" POST /api/streams/{stream_id}/playback-token"
        ) from None
    except jwt.DecodeError:
        # PyJWT's own message names the decoding step that failed, such as a
        # header byte that is not UTF-8, which means nothing to a viewer.
        raise InvalidPlayback(
            "invalid playback token: not a well-formed JWT; use the playback_token"
            f" from POST /api/streams/{stream_id}/playback-token"
        ) from None
    except jwt.InvalidTokenError as exc:
        raise InvalidPlayback(f"invalid playback token: {exc}") from None
    viewer_id, token_stream, token_generation = (
        claims["sub"],
        claims["stream_id"],
        claims["gen"],
    )
    if not isinstance(viewer_id, str) or not viewer_id:
        raise InvalidPlayback("playback token has an invalid viewer id")
    if token_stream != stream_id:
        raise InvalidPlayback("playback token is for another stream")
    if not isinstance(token_generation, int) or token_generation != generation:
        raise InvalidPlayback("playback token was revoked")
    return PlaybackToken(
        stream_id=stream_id,
        viewer_id=viewer_id,
        generation=token_generation,
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


@functools.lru_cache(maxsize=8)
def session_key(secret: bytes) -> bytes:
    """Derive the HMAC key of session signatures from the playback secret.

    A separate key keeps a session signature from ever being usable as a JWT
    signature, and the other way round.
    """
    return hmac.new(secret, SESSION_KEY_LABEL, hashlib.sha256).digest()


def sign_session(key: bytes, stream_id: str, session: PlaybackSession) -> str:
    """Return the session signature of ``session`` on ``stream_id``.

    The result uses only unreserved URI characters (base64url), so it goes
    into a query string as it is.
    """
    fields = [
        SESSION_FORMAT_VERSION,
        session.kind,
        session.key,
        session.signed_at,
        session.generation,
    ]
    payload = _b64encode(json.dumps(fields, separators=(",", ":")).encode())
    return payload + _session_mac(key, stream_id, payload)


def verify_session(key: bytes, stream_id: str, signature: str) -> PlaybackSession:
    """Check a session signature for ``stream_id`` and return its session.

    Checks the MAC (in constant time) and the format only: the caller checks
    the age, the kind and the generation against its policy. Raises
    InvalidPlayback for anything that is not a signature of this box for
    this stream.
    """
    invalid = InvalidPlayback("invalid playback session signature")
    if len(signature) > MAX_SESSION_LENGTH or not _BASE64URL.fullmatch(signature):
        raise invalid
    payload, mac = signature[:-SESSION_MAC_LENGTH], signature[-SESSION_MAC_LENGTH:]
    if not payload or not hmac.compare_digest(
        mac, _session_mac(key, stream_id, payload)
    ):
        raise invalid
    try:
        fields = json.loads(_b64decode(payload))
        version, kind, session_key_value, signed_at, generation = fields
    except (ValueError, TypeError, binascii.Error):
        raise invalid from None
    if (
        version != SESSION_FORMAT_VERSION
        or kind not in (TOKEN_SESSION, ANONYMOUS_SESSION)
        or not isinstance(session_key_value, str)
        or not isinstance(signed_at, int)
        or not isinstance(generation, int)
    ):
        raise invalid
    return PlaybackSession(kind, session_key_value, signed_at, generation)


def unix_now() -> int:
    return int(time.time())


def add_query_to_uris(playlist: str, name: str, value: str) -> str:
    """Return ``playlist`` with ``name=value`` in the query of every relative URI.

    Rewrites URI lines and the URI="..." attribute of tags such as
    EXT-X-MAP and EXT-X-MEDIA. An existing ``name`` parameter is replaced,
    other parameters and fragments are kept, and absolute URIs (with a
    scheme or a host) are left alone so the value never leaves the box.
    ``value`` must already be URI-safe. Line endings are kept.
    """
    lines = playlist.splitlines(keepends=True)
    rewritten = []
    for line in lines:
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        if body.startswith("#"):
            body = _URI_ATTRIBUTE.sub(
                lambda match: f'URI="{_with_query(match.group(1), name, value)}"',
                body,
            )
        elif body.strip():
            body = _with_query(body.strip(), name, value)
        rewritten.append(body + ending)
    return "".join(rewritten)


def _with_query(uri: str, name: str, value: str) -> str:
    if not uri or _ABSOLUTE_URI.match(uri):
        return uri
    uri, hash_mark, fragment = uri.partition("#")
    path, _, query = uri.partition("?")
    kept = [
        part
        for part in query.split("&")
        if part and part != name and not part.startswith(f"{name}=")
    ]
    kept.append(f"{name}={value}")
    return f"{path}?{'&'.join(kept)}{hash_mark}{fragment}"


def _session_mac(key: bytes, stream_id: str, payload: str) -> str:
    message = b"%s|%s" % (stream_id.encode(), payload.encode())
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return _b64encode(digest[:SESSION_MAC_BYTES])


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
