"""Playback tokens, session signatures and signed HLS playback."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from realcast_box.api.audit import AUDIT_WRITER
from realcast_box.api.security import create_access_token
from realcast_box.hls import playback
from realcast_box.hls.playback import (
    InvalidPlayback,
    PlaybackSession,
    add_query_to_uris,
    create_playback_token,
    decode_playback_token,
    effective_policy,
    sign_session,
    verify_session,
)
from realcast_box.store.ids import parse_timestamp
from tests.box import parse_sent, run_publisher, start_box, start_publisher
from tests.hls_helpers import (
    craft_session,
    craft_token,
    create_app_and_stream,
    fetch_playlists,
    ffprobe,
    issue_token,
    playlist_uris,
    query_value,
    read_with_pyav,
    signed_stream,
    write_hls_tree,
)

SECRET = b"s" * 32
NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


# --- Playlist rewriting -------------------------------------------------------


def test_rewrite_multivariant_exact():
    text = (
        "#EXTM3U\n"
        "#EXT-X-VERSION:7\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=1000,CODECS="avc1.64001f,mp4a.40.2"\n'
        "source-ab12/index.m3u8\n"
    )
    assert add_query_to_uris(text, "session", "SIG") == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:7\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=1000,CODECS="avc1.64001f,mp4a.40.2"\n'
        "source-ab12/index.m3u8?session=SIG\n"
    )


def test_rewrite_media_playlist_exact():
    text = (
        "#EXTM3U\n"
        "#EXT-X-TARGETDURATION:2\n"
        '#EXT-X-MAP:URI="init-0.mp4"\n'
        "#EXTINF:2.000,\n"
        "seg-1.m4s\n"
        "#EXT-X-DISCONTINUITY\n"
        '#EXT-X-MAP:URI="init-1.mp4"\n'
        "#EXTINF:1.960,\n"
        "seg-2.m4s\n"
        "#EXT-X-ENDLIST\n"
    )
    assert add_query_to_uris(text, "session", "SIG") == (
        "#EXTM3U\n"
        "#EXT-X-TARGETDURATION:2\n"
        '#EXT-X-MAP:URI="init-0.mp4?session=SIG"\n'
        "#EXTINF:2.000,\n"
        "seg-1.m4s?session=SIG\n"
        "#EXT-X-DISCONTINUITY\n"
        '#EXT-X-MAP:URI="init-1.mp4?session=SIG"\n'
        "#EXTINF:1.960,\n"
        "seg-2.m4s?session=SIG\n"
        "#EXT-X-ENDLIST\n"
    )


def test_rewrite_keeps_other_parameters_and_replaces_old_value():
    text = "a.m4s?x=1&session=OLD&y=2#frag\n"
    assert (
        add_query_to_uris(text, "session", "NEW") == "a.m4s?x=1&y=2&session=NEW#frag\n"
    )


def test_rewrite_media_tag_and_crlf():
    text = '#EXTM3U\r\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",URI="audio/index.m3u8"\r\n'
    assert add_query_to_uris(text, "session", "S") == (
        "#EXTM3U\r\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",URI="audio/index.m3u8?session=S"\r\n'
    )


@pytest.mark.parametrize(
    "uri",
    [
        "https://cdn.example/seg-1.m4s",
        "//cdn.example/seg-1.m4s",
        "data:application/octet-stream;base64,AAAA",
    ],
)
def test_rewrite_leaves_absolute_uris(uri):
    assert add_query_to_uris(f"#EXTINF:2,\n{uri}\n", "session", "S") == (
        f"#EXTINF:2,\n{uri}\n"
    )


def test_rewrite_leaves_comments_and_blank_lines():
    text = "#EXTM3U\n\n# a comment with URI-like text\n"
    assert add_query_to_uris(text, "session", "S") == text


# --- Playback policy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("app_settings", "stream_settings", "expected"),
    [
        ({}, {}, "public"),
        ({"playback_policy": "signed"}, {}, "signed"),
        ({"playback_policy": "signed"}, {"playback_policy": "public"}, "public"),
        ({}, {"playback_policy": "signed"}, "signed"),
    ],
)
def test_policy_stream_overrides_app(app_settings, stream_settings, expected):
    assert effective_policy(app_settings, stream_settings) == expected


# --- Playback tokens ----------------------------------------------------------


def make_token(**changes) -> str:
    options = {
        "generation": 0,
        "expiry_minutes": 60,
        "now": datetime.now(UTC).replace(microsecond=0),
    }
    options.update(changes)
    token, _ = create_playback_token(SECRET, "stream_a", "viewer_1", **options)
    return token


def decode(token: str, *, stream_id="stream_a", generation=0, leeway=0.0):
    return decode_playback_token(
        token, SECRET, stream_id=stream_id, generation=generation, leeway=leeway
    )


def test_token_round_trip():
    claims = decode(make_token())
    assert claims.viewer_id == "viewer_1"
    assert claims.stream_id == "stream_a"


def test_token_expires_at_matches_exp_claim():
    token, expires_at = create_playback_token(
        SECRET, "stream_a", "v", generation=0, expiry_minutes=5, now=NOW
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] == int(expires_at.timestamp())
    assert expires_at == NOW + timedelta(minutes=5)


def test_token_rejects_other_stream():
    with pytest.raises(InvalidPlayback, match="another stream"):
        decode(make_token(), stream_id="stream_b")


def test_token_rejects_revoked_generation():
    with pytest.raises(InvalidPlayback, match="revoked"):
        decode(make_token(generation=0), generation=1)


def test_token_rejects_expired():
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    with pytest.raises(InvalidPlayback, match="expired"):
        decode(make_token(now=past, expiry_minutes=1))


def test_token_leeway_accepts_recently_expired():
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=70)
    claims = decode(make_token(now=past, expiry_minutes=1), leeway=30)
    assert claims.viewer_id == "viewer_1"


def test_token_rejects_alg_none():
    claims = jwt.decode(make_token(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    with pytest.raises(InvalidPlayback):
        decode(unsigned)


def test_token_rejects_tampered_signature():
    token = make_token()
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidPlayback):
        decode(f"{header}.{payload}.{flipped}")


@pytest.mark.parametrize("token", ["abc", "a.b.c", "\u00b7.e30.x", ""])
def test_token_malformed_message(token):
    with pytest.raises(InvalidPlayback, match="not a well-formed JWT") as caught:
        decode(token)
    assert "POST /api/streams/stream_a/playback-token" in str(caught.value)


def test_token_other_secret_message():
    access = create_access_token("user_1", b"another secret" * 3, expiry_minutes=10)
    with pytest.raises(InvalidPlayback, match="signature does not match"):
        decode(access)


def test_token_rejects_tampered_payload():
    token = make_token()
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["stream_id"] = "stream_b"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    with pytest.raises(InvalidPlayback):
        decode(f"{header}.{forged.decode()}.{signature}", stream_id="stream_b")


def test_token_rejects_access_token_with_same_secret():
    access = create_access_token("user_1", SECRET, expiry_minutes=10)
    with pytest.raises(InvalidPlayback):
        decode(access)


def test_token_rejects_other_audience():
    claims = jwt.decode(make_token(), options={"verify_signature": False})
    claims["aud"] = "realcast-box:api"
    other = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(InvalidPlayback, match="not a playback token"):
        decode(other)


# --- Session signatures -------------------------------------------------------


def test_session_round_trip():
    key = playback.session_key(SECRET)
    session = PlaybackSession("v", "viewer@example.com", 1_900_000_000, 3)
    signature = sign_session(key, "stream_a", session)
    assert verify_session(key, "stream_a", signature) == session


def test_session_is_url_safe():
    key = playback.session_key(SECRET)
    signature = sign_session(key, "s", PlaybackSession("v", "a b/é?&=", 1, 0))
    assert signature.replace("-", "").replace("_", "").isalnum()


def test_session_rejects_other_stream():
    key = playback.session_key(SECRET)
    signature = sign_session(key, "stream_a", PlaybackSession("v", "x", 1, 0))
    with pytest.raises(InvalidPlayback):
        verify_session(key, "stream_b", signature)


@pytest.mark.parametrize("position", [0, 10, -1])
def test_session_rejects_tampering(position):
    key = playback.session_key(SECRET)
    signature = sign_session(key, "stream_a", PlaybackSession("v", "x", 1, 0))
    characters = list(signature)
    characters[position] = "A" if characters[position] != "A" else "B"
    with pytest.raises(InvalidPlayback):
        verify_session(key, "stream_a", "".join(characters))


@pytest.mark.parametrize("value", ["", "short", "a" * 600, "bad chars!" * 4])
def test_session_rejects_malformed(value):
    with pytest.raises(InvalidPlayback):
        verify_session(playback.session_key(SECRET), "stream_a", value)


# --- Token endpoint -----------------------------------------------------------


async def test_token_endpoint_response(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    before = datetime.now(UTC).replace(microsecond=0)
    body = await issue_token(box, stream["id"])
    claims = jwt.decode(body["playback_token"], options={"verify_signature": False})
    expires_at = parse_timestamp(body["expires_at"])
    assert set(body) == {"playback_token", "playback_url", "expires_at"}
    assert body["playback_url"] == f"{stream['hls_url']}?token={body['playback_token']}"
    assert claims["sub"] == "viewer_1"
    assert claims["stream_id"] == stream["id"]
    assert claims["exp"] == int(expires_at.timestamp())
    assert before + timedelta(minutes=60) <= expires_at
    assert expires_at <= before + timedelta(minutes=61)


async def test_token_endpoint_expiry_minutes(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    response = await box.client.post(
        f"/api/streams/{stream['id']}/playback-token",
        json={"viewer_id": "v", "expiry_minutes": 1440},
        headers=box.auth,
    )
    body = await response.json()
    claims = jwt.decode(body["playback_token"], options={"verify_signature": False})
    assert response.status == 200
    assert claims["exp"] - claims["iat"] == 1440 * 60


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"viewer_id": "v", "expiry_minutes": 0}, "expiry_minutes: must be"),
        ({"viewer_id": "v", "expiry_minutes": 1441}, "expiry_minutes: must be"),
        ({"viewer_id": "v", "expiry_minutes": "60"}, "expiry_minutes: must be"),
        ({"viewer_id": "v", "expiry_minutes": True}, "expiry_minutes: must be"),
        ({"viewer_id": "v", "expiry_minutes": 1.5}, "expiry_minutes: must be"),
        ({"expiry_minutes": 5}, "viewer_id: field required"),
        ({"viewer_id": ""}, "viewer_id: must not be empty"),
        ({"viewer_id": "v" * 129}, "viewer_id: must be at most 128"),
        ({"viewer_id": "v", "extra": 1}, "extra: unknown field"),
    ],
)
async def test_token_endpoint_rejects_bad_body(aiohttp_client, tmp_path, body, detail):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    response = await box.client.post(
        f"/api/streams/{stream['id']}/playback-token", json=body, headers=box.auth
    )
    assert response.status == 400
    assert (await response.json())["detail"].startswith(detail)


async def test_token_endpoint_unknown_stream(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    response = await box.client.post(
        "/api/streams/stream_0000000000000000/playback-token",
        json={"viewer_id": "v"},
        headers=box.auth,
    )
    assert response.status == 404


async def test_token_endpoint_needs_authentication(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    response = await box.client.post(
        f"/api/streams/{stream['id']}/playback-token", json={"viewer_id": "v"}
    )
    assert response.status == 401


async def create_key(box, app_id: str, scopes: list[str]) -> dict[str, str]:
    response = await box.client.post(
        "/api/api-keys",
        json={"app_id": app_id, "name": "Player backend", "scopes": scopes},
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    key = await response.json()
    credentials = f"{key['api_key']}:{key['api_secret']}".encode()
    return {"Authorization": f"Basic {base64.b64encode(credentials).decode()}"}


async def test_token_endpoint_api_key_scopes(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    reader = await create_key(box, stream["app_id"], ["streams:read"])
    other = await create_key(box, stream["app_id"], ["chat:read"])
    path = f"/api/streams/{stream['id']}/playback-token"

    allowed = await box.client.post(path, json={"viewer_id": "v"}, headers=reader)
    denied = await box.client.post(path, json={"viewer_id": "v"}, headers=other)
    revoke_denied = await box.client.post(f"{path}/revoke", headers=reader)
    assert allowed.status == 200
    assert denied.status == 403
    assert "streams:read" in (await denied.json())["detail"]
    assert revoke_denied.status == 403
    assert "streams:write" in (await revoke_denied.json())["detail"]


# --- Playback policy setting --------------------------------------------------


@pytest.mark.parametrize("bad", ["private", "", None, 1, ["signed"]])
async def test_policy_validated_on_streams_and_apps(aiohttp_client, tmp_path, bad):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    settings = {"settings": {"playback_policy": bad}}
    requests = [
        ("POST", "/api/apps", {"name": "A", **settings}),
        ("PUT", f"/api/apps/{stream['app_id']}", settings),
        (
            "POST",
            "/api/streams",
            {"app_id": stream["app_id"], "title": "T", **settings},
        ),
        ("PUT", f"/api/streams/{stream['id']}", settings),
    ]
    for method, path, body in requests:
        response = await box.client.request(method, path, json=body, headers=box.auth)
        detail = (await response.json())["detail"]
        assert response.status == 400, (method, path)
        assert detail.startswith("settings.playback_policy: must be one of"), detail


async def test_policy_accepted_values(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await create_app_and_stream(
        box,
        app_settings={"playback_policy": "signed"},
        stream_settings={"playback_policy": "public"},
    )
    assert stream["settings"] == {"playback_policy": "public"}


# --- Signed HLS: the token matrix ---------------------------------------------


async def test_signed_missing_token_401(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream(box)
    for path in ("index.m3u8", "source/index.m3u8", "source/seg-1.m4s"):
        response = await box.client.get(f"/hls/{stream['id']}/{path}")
        body = await response.json()
        assert response.status == 401, path
        assert body["status_code"] == 401
        assert "missing playback token" in body["detail"]
        assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_signed_app_policy_applies_to_stream(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await create_app_and_stream(
        box, app_settings={"playback_policy": "signed"}
    )
    write_hls_tree(box, stream["id"])
    response = await box.client.get(f"/hls/{stream['id']}/index.m3u8")
    assert response.status == 401


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    return f"{header}.{payload}.{signature[:-4]}AAAA"


def unsigned(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, key=None, algorithm="none")


async def test_signed_rejects_bad_tokens_403(aiohttp_client, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    box = await start_box(aiohttp_client, tmp_path, playback_clock_leeway=0)
    stream = await signed_stream(box)
    other = await signed_stream(box)
    valid = (await issue_token(box, stream["id"]))["playback_token"]
    bad_tokens = {
        "garbage": "not-a-jwt",
        "tampered": tampered(valid),
        "alg none": unsigned(valid),
        "access token": box.token,
        "other stream": (await issue_token(box, other["id"]))["playback_token"],
        "expired": craft_token(box, stream["id"], issued_seconds_ago=61),
    }
    for name, token in bad_tokens.items():
        response = await box.client.get(f"/hls/{stream['id']}/index.m3u8?token={token}")
        body = await response.json()
        assert response.status == 403, name
        assert body["status_code"] == 403, name
        assert response.headers["Cache-Control"] == "no-store", name
    box_logs = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("realcast_box")
    )
    for token in bad_tokens.values():
        assert token not in box_logs


async def test_signed_expired_within_leeway_plays(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, playback_clock_leeway=30)
    stream = await signed_stream(box)
    token = craft_token(box, stream["id"], issued_seconds_ago=70)
    response = await box.client.get(f"/hls/{stream['id']}/index.m3u8?token={token}")
    assert response.status == 200


async def test_signed_token_plays_through_rewritten_uris(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream(box)
    token = (await issue_token(box, stream["id"]))["playback_token"]

    media_path, media = await fetch_playlists(box, stream["id"], f"token={token}")
    uris = playlist_uris(media)
    assert [uri.split("?")[0] for uri in uris] == [
        "init-0.mp4",
        "seg-1.m4s",
        "seg-2.m4s",
    ]
    assert token not in media
    base = media_path.rsplit("/", 1)[0]
    for uri in uris:
        assert query_value(uri, "session"), uri
        response = await box.client.get(f"{base}/{uri}")
        assert response.status == 200, uri


async def test_signed_bearer_header_plays(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream(box)
    token = (await issue_token(box, stream["id"]))["playback_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("index.m3u8", "source/index.m3u8", "source/seg-1.m4s"):
        response = await box.client.get(f"/hls/{stream['id']}/{path}", headers=headers)
        assert response.status == 200, path


async def test_signed_credentials_survive_player_parameters(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream(box)
    token = (await issue_token(box, stream["id"]))["playback_token"]
    prefix = f"/hls/{stream['id']}"
    response = await box.client.get(
        f"{prefix}/index.m3u8?_HLS_msn=4&_=1712345&token={token}&_HLS_part=0"
    )
    media_uri = playlist_uris(await response.text())[0]
    session = query_value(media_uri, "session")
    response = await box.client.get(
        f"{prefix}/source/index.m3u8?_HLS_part=2&session={session}&_HLS_msn=7&cb=9"
    )
    segment_uri = playlist_uris(await response.text())[1]
    segment_session = query_value(segment_uri, "session")
    segment = await box.client.get(
        f"{prefix}/source/seg-1.m4s?t=1&session={segment_session}&_HLS_msn=1"
    )
    assert response.status == 200
    assert segment.status == 200


async def test_signed_session_of_other_stream_403(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream(box)
    other = await signed_stream(box)
    session = craft_session(box, other["id"])
    for path in ("source/index.m3u8", "source/seg-1.m4s"):
        response = await box.client.get(f"/hls/{stream['id']}/{path}?session={session}")
        assert response.status == 403, path


async def test_signed_rejects_anonymous_session(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream(box)
    session = craft_session(box, stream["id"], "random", kind="s")
    response = await box.client.get(
        f"/hls/{stream['id']}/source/index.m3u8?session={session}"
    )
    assert response.status == 403


async def test_signed_copied_segment_uri_expires(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, playback_session_seconds=30)
    stream = await signed_stream(box)
    fresh = craft_session(box, stream["id"], signed_seconds_ago=25)
    stale = craft_session(box, stream["id"], signed_seconds_ago=40)
    path = f"/hls/{stream['id']}/source/seg-1.m4s"
    assert (await box.client.get(f"{path}?session={fresh}")).status == 200
    response = await box.client.get(f"{path}?session={stale}")
    assert response.status == 403
    assert "expired" in (await response.json())["detail"]


async def test_signed_media_playlist_kept_alive_by_reloads(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, playback_session_seconds=30)
    stream = await signed_stream(box)
    path = f"/hls/{stream['id']}/source/index.m3u8"
    stale = craft_session(box, stream["id"], "viewer_9", signed_seconds_ago=40)

    # No media fetch with this session lately, so it has ended.
    assert (await box.client.get(f"{path}?session={stale}")).status == 403

    # A session that keeps reloading stays valid after its signature's age.
    fresh = craft_session(box, stream["id"], "viewer_9", signed_seconds_ago=0)
    assert (await box.client.get(f"{path}?session={fresh}")).status == 200
    assert (await box.client.get(f"{path}?session={stale}")).status == 200


async def test_signed_plays_past_token_expiry(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, playback_clock_leeway=0)
    stream = await signed_stream(box)
    # Expires two to three seconds from now.
    token = craft_token(box, stream["id"], issued_seconds_ago=57)
    media_path, _ = await fetch_playlists(box, stream["id"], f"token={token}")
    await asyncio.sleep(3.5)

    again = await box.client.get(f"/hls/{stream['id']}/index.m3u8?token={token}")
    reload = await box.client.get(media_path)
    segment_uri = playlist_uris(await reload.text())[1]
    base = media_path.rsplit("/", 1)[0]
    segment = await box.client.get(f"{base}/{segment_uri}")
    assert again.status == 403
    assert reload.status == 200
    assert segment.status == 200


async def test_signed_revoke_ends_tokens_and_sessions(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream(box)
    token = (await issue_token(box, stream["id"]))["playback_token"]
    media_path, _ = await fetch_playlists(box, stream["id"], f"token={token}")

    response = await box.client.post(
        f"/api/streams/{stream['id']}/playback-token/revoke", headers=box.auth
    )
    body = await response.json()
    assert response.status == 200
    assert body["stream_id"] == stream["id"]
    assert parse_timestamp(body["revoked_at"])

    old_token = await box.client.get(f"/hls/{stream['id']}/index.m3u8?token={token}")
    old_session = await box.client.get(media_path)
    assert old_token.status == 403
    assert "revoked" in (await old_token.json())["detail"]
    assert old_session.status == 403
    assert "revoked" in (await old_session.json())["detail"]

    new_token = (await issue_token(box, stream["id"]))["playback_token"]
    response = await box.client.get(f"/hls/{stream['id']}/index.m3u8?token={new_token}")
    assert response.status == 200


async def test_revoke_is_audited_and_owned(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    response = await box.client.post(
        "/api/streams/stream_0000000000000000/playback-token/revoke", headers=box.auth
    )
    assert response.status == 404
    await box.client.post(
        f"/api/streams/{stream['id']}/playback-token/revoke", headers=box.auth
    )
    await box.app[AUDIT_WRITER].flush()
    logs = await (await box.client.get("/api/audit-logs", headers=box.auth)).json()
    actions = [entry["action"] for entry in logs]
    assert "revoke_playback_tokens" in actions


# --- Public HLS sessions ------------------------------------------------------


async def test_public_multivariant_assigns_sessions(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    write_hls_tree(box, stream["id"])
    path = f"/hls/{stream['id']}/index.m3u8"
    first = playlist_uris(await (await box.client.get(path)).text())[0]
    second = playlist_uris(await (await box.client.get(path)).text())[0]
    assert first.startswith("source/index.m3u8?session=")
    assert query_value(first, "session") != query_value(second, "session")


async def test_public_media_playlist_keeps_session(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    write_hls_tree(box, stream["id"])
    key = playback.session_key(box.app[playback.PLAYBACK_SECRET])
    media_path, media = await fetch_playlists(box, stream["id"], "")
    listed = verify_session(key, stream["id"], query_value(media_path, "session"))
    segment = verify_session(
        key, stream["id"], query_value(playlist_uris(media)[1], "session")
    )
    assert segment.key == listed.key


async def test_public_serves_without_session(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    write_hls_tree(box, stream["id"])
    for path in ("source/index.m3u8", "source/seg-1.m4s", "source/init-0.mp4"):
        response = await box.client.get(f"/hls/{stream['id']}/{path}?session=junk")
        assert response.status == 200, path


# --- End to end: real publisher, PyAV and ffprobe as players ------------------


async def test_signed_stream_played_by_pyav_and_ffprobe(aiohttp_client, tmp_path):
    if shutil.which("ffprobe") is None:
        pytest.fail("ffprobe missing: .ci/run installs ffmpeg with apt-get")
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream_for_publishing(box)
    code, output = await run_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "6"
    )
    assert code == 0, output
    sent_video, _ = parse_sent(output)
    await box.wait_for_status(stream["id"], "offline")

    body = await issue_token(box, stream["id"])
    url = absolute(box, body["playback_url"])
    code, result = await read_with_pyav(url)
    assert code == 0, result
    assert result["video_codec"] == "h264"
    assert result["audio_codec"] == "aac"
    assert result["video_frames"] == sent_video
    assert result["audio_packets"] > 0

    code, streams = await ffprobe(url)
    assert code == 0, streams
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert streams["audio"]["codec_name"] == "aac"

    code, output = await ffprobe(absolute(box, stream["hls_url"]))
    assert code != 0
    assert "401" in output


async def test_signed_live_playback_outlives_token(aiohttp_client, tmp_path):
    box = await start_box(
        aiohttp_client, tmp_path, playback_clock_leeway=0, playback_session_seconds=4
    )
    stream = await signed_stream_for_publishing(box)
    publisher = await start_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "12", "--realtime"
    )
    try:
        await box.wait_for_status(stream["id"], "live")
        ready = (await issue_token(box, stream["id"]))["playback_token"]
        await wait_for_playlist(box, f"/hls/{stream['id']}/index.m3u8?token={ready}")
        # The token expires four to five seconds from now, and the session
        # signature in the multivariant playlist four seconds after the
        # player opens it. The player's reloads keep its session going to the
        # end of the stream, several seconds later.
        token = craft_token(box, stream["id"], issued_seconds_ago=55)
        hls_path = f"/hls/{stream['id']}/index.m3u8?token={token}"
        code, result = await read_with_pyav(str(box.client.make_url(hls_path)))
    finally:
        output, _ = await asyncio.wait_for(publisher.communicate(), 60)
    assert publisher.returncode == 0, output
    assert code == 0, result
    assert result["last_video_time"] - result["first_video_time"] >= 9.0
    again = await box.client.get(hls_path)
    assert again.status == 403


async def signed_stream_for_publishing(box) -> dict:
    return await create_app_and_stream(
        box, stream_settings={"playback_policy": "signed"}
    )


def absolute(box, url: str) -> str:
    """Point a URL from the API at the test server (its host is the Host header)."""
    path = url.split("/hls/", 1)[1]
    return str(box.client.make_url(f"/hls/{path}"))


async def wait_for_playlist(box, path: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await box.client.get(path)
        if response.status == 200:
            return
        assert loop.time() < deadline, f"no playlist: {response.status}"
        await asyncio.sleep(0.1)


async def test_signed_session_signature_cannot_open_multivariant(
    aiohttp_client, tmp_path
):
    # A signature copied out of a playlist keeps an existing session going,
    # but starting playback again needs a valid token.
    box = await start_box(aiohttp_client, tmp_path)
    stream = await signed_stream(box)
    token = (await issue_token(box, stream["id"]))["playback_token"]
    _, media_playlist = await fetch_playlists(box, stream["id"], f"token={token}")
    signature = query_value(playlist_uris(media_playlist)[-1], "session")
    assert signature

    response = await box.client.get(
        f"/hls/{stream['id']}/index.m3u8?session={signature}"
    )
    assert response.status == 403
    assert "multivariant" in (await response.json())["detail"]
    response = await box.client.get(
        f"/hls/{stream['id']}/source/index.m3u8?session={signature}"
    )
    assert response.status == 200
