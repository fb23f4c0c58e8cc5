"""The box behind a reverse proxy: public_url in API URLs, X-Forwarded-For."""

from __future__ import annotations

import pytest

from realcast_box.api.client_address import MAX_FORWARDED_HOPS, forwarded_client
from realcast_box.app import create_app
from realcast_box.config import parse_trusted_proxies
from realcast_box.errors import ConfigError
from realcast_box.store import recordings as recording_store
from tests.box import start_box, use_fresh_rate_window
from tests.conftest import make_config
from tests.hls_helpers import write_hls_tree
from tests.test_api_audit import all_entries

PUBLIC_URL = "https://live.example.com"
CLIENT = "203.0.113.5"
OTHER_CLIENT = "198.51.100.7"


@pytest.fixture
def proxied_config(tmp_path):
    return make_config(tmp_path, public_url=PUBLIC_URL, public_host="ingest.example")


@pytest.fixture
async def proxied_owner(
    aiohttp_client, build_app, proxied_config, database, hub, make_user
):
    """Return a user with an app and a stream, on a box with public_url set."""
    client = await aiohttp_client(build_app(proxied_config, database, hub))
    user = await make_user(client=client)
    user.app = await user.create_app()
    user.stream = await user.create_stream(user.app["id"])
    return user


# --- public_url ---------------------------------------------------------------


async def test_proxy_public_url_in_stream_urls(proxied_owner):
    stream = proxied_owner.stream
    assert stream["hls_url"] == f"{PUBLIC_URL}/hls/{stream['id']}/index.m3u8"
    assert stream["rtmp_url"] == "rtmp://ingest.example:1935/live"


async def test_proxy_public_url_ignores_host_header(proxied_owner):
    stream_id = proxied_owner.stream["id"]
    response = await proxied_owner.client.get(
        f"/api/streams/{stream_id}",
        headers={**proxied_owner.headers, "Host": "10.0.0.7:8080"},
    )
    body = await response.json()
    assert body["hls_url"] == f"{PUBLIC_URL}/hls/{stream_id}/index.m3u8"


async def test_proxy_public_url_in_playback_url(proxied_owner):
    stream_id = proxied_owner.stream["id"]
    response = await proxied_owner.client.post(
        f"/api/streams/{stream_id}/playback-token",
        json={"viewer_id": "viewer-1"},
        headers=proxied_owner.headers,
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    expected = f"{PUBLIC_URL}/hls/{stream_id}/index.m3u8?token={body['playback_token']}"
    assert body["playback_url"] == expected


async def test_proxy_public_url_in_recording_urls(
    proxied_owner, start_publishing, database
):
    stream_id = proxied_owner.stream["id"]
    await start_publishing(stream_id)
    response = await proxied_owner.client.post(
        "/api/recordings/start",
        json={"stream_id": stream_id},
        headers=proxied_owner.headers,
    )
    assert response.status == 201, await response.text()
    recording_id = (await response.json())["id"]
    await recording_store.mark_completed(
        database, recording_id, duration=4.0, file_size=1000, has_thumbnail=True
    )
    response = await proxied_owner.client.get(
        f"/api/recordings/{recording_id}", headers=proxied_owner.headers
    )
    body = await response.json()
    assert body["cdn_url"] == f"{PUBLIC_URL}/vod/{recording_id}.mp4"
    assert body["thumbnail_url"] == f"{PUBLIC_URL}/vod/{recording_id}/thumbnail.jpg"


async def test_proxy_public_url_counts_as_own_host(proxied_owner, start_publishing):
    """A recording of the box's own public HLS URL records the live session."""
    stream_id = proxied_owner.stream["id"]
    await start_publishing(stream_id)
    response = await proxied_owner.client.post(
        "/api/recordings/start",
        json={
            "stream_id": stream_id,
            "stream_url": f"{PUBLIC_URL}/hls/{stream_id}/index.m3u8",
        },
        headers=proxied_owner.headers,
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["source"] == "live"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://live.example.com", "https://live.example.com"),
        ("HTTPS://Live.Example.COM/", "https://live.example.com"),
        ("http://192.0.2.7:8080", "http://192.0.2.7:8080"),
        ("https://[2001:db8::7]:8443/", "https://[2001:db8::7]:8443"),
        # An internationalized host is written in its ASCII (xn--) form.
        ("https://Bücher.example:8443", "https://xn--bcher-kva.example:8443"),
    ],
)
def test_proxy_public_url_normalized(tmp_path, value, expected):
    assert make_config(tmp_path, public_url=value).public_url == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("live.example.com", "scheme must be http or https"),
        ("ftp://live.example.com", "scheme must be http or https"),
        ("https://", "host is missing or invalid"),
        ("https://live example.com", "host is missing or invalid"),
        ("https://live..example.com", "host is missing or invalid"),
        ("https://.", "host is missing or invalid"),
        ("https://-live.example.com", "host is missing or invalid"),
        ("https://live.example.com/tv", "path, query or fragment"),
        ("https://live.example.com?a=1", "path, query or fragment"),
        ("https://live.example.com#top", "path, query or fragment"),
        ("https://user@live.example.com", "user name or password"),
        ("https://live.example.com:0", "port must be from 1 to 65535"),
        ("https://live.example.com:70000", "public_url"),
        ("https://[2001:db8::zz]", "public_url"),
        ("https://☃.example", "ASCII form"),
    ],
)
def test_proxy_public_url_invalid_rejected(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message) as excinfo:
        make_config(tmp_path, public_url=value)
    assert "public_url" in str(excinfo.value)


def test_proxy_public_url_unset_by_default(config):
    assert config.public_url == ""


# --- trusted_proxies and X-Forwarded-For ---------------------------------------


def test_proxy_trusted_proxies_parsed():
    networks = parse_trusted_proxies(" 127.0.0.1, 10.0.0.0/8 ,, ::1 ")
    assert [str(network) for network in networks] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
    ]


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/33", "10.0.0.1, nginx"])
def test_proxy_trusted_proxies_invalid_rejected(tmp_path, value):
    with pytest.raises(ConfigError, match="trusted_proxies"):
        make_config(tmp_path, trusted_proxies=value)


TRUSTED = parse_trusted_proxies("127.0.0.1, 10.0.0.0/8")


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # The peer is not a trusted proxy: the header is a client's claim.
        ("192.0.2.9", ["203.0.113.5"], "192.0.2.9"),
        # No header from a trusted proxy: the proxy itself is the client.
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.5"], "203.0.113.5"),
        # A client's own value in front of the proxy's entry is skipped.
        ("127.0.0.1", ["198.51.100.7, 203.0.113.5"], "203.0.113.5"),
        # Trusted hops (a CDN edge in 10/8, then nginx) are walked over.
        ("127.0.0.1", ["203.0.113.5, 10.1.2.3"], "203.0.113.5"),
        ("127.0.0.1", ["203.0.113.5", "10.1.2.3"], "203.0.113.5"),
        # Every hop trusted: the left-most one.
        ("127.0.0.1", ["10.1.2.3, 10.4.5.6"], "10.1.2.3"),
        # A hop that is no address stops the walk at the last trusted hop.
        ("127.0.0.1", ["unknown"], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.5, garbage, 10.1.2.3"], "10.1.2.3"),
        # Ports after an address are dropped.
        ("127.0.0.1", ["203.0.113.5:4711"], "203.0.113.5"),
        ("127.0.0.1", ["[2001:db8::5]:4711"], "2001:db8::5"),
        ("127.0.0.1", ["2001:db8::5"], "2001:db8::5"),
        # An IPv4 peer seen on a dual-stack socket.
        ("::ffff:127.0.0.1", ["203.0.113.5"], "203.0.113.5"),
        # A dual-stack proxy writes IPv4 clients as IPv4-mapped addresses,
        # which count as the IPv4 address they contain.
        ("127.0.0.1", ["::ffff:203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", ["::ffff:203.0.113.5, ::ffff:10.1.2.3"], "203.0.113.5"),
    ],
)
def test_proxy_forwarded_client_cases(peer, headers, expected):
    assert forwarded_client(peer, headers, TRUSTED) == expected


@pytest.mark.parametrize("peer", ["127.0.0.1", "::ffff:127.0.0.1"])
@pytest.mark.parametrize("setting", ["::ffff:127.0.0.1", "::ffff:127.0.0.0/104"])
def test_proxy_trusted_mapped_ipv4_entry(peer, setting):
    # A box listening on "::" logs IPv4 peers as ::ffff:a.b.c.d, and an owner
    # may copy that form into trusted_proxies.
    networks = parse_trusted_proxies(setting)
    assert forwarded_client(peer, [CLIENT], networks) == CLIENT


def test_proxy_forwarded_walk_bounded():
    # A client inside a trusted network can send any number of trusted
    # addresses. The walk stops after MAX_FORWARDED_HOPS entries, at the
    # last one reached, so such a header costs little time.
    trusted_hops = ["10.0.0.9"] * (MAX_FORWARDED_HOPS + 5)
    header = ", ".join([CLIENT, *trusted_hops])
    assert forwarded_client("127.0.0.1", [header], TRUSTED) == "10.0.0.9"
    many_headers = [CLIENT, *trusted_hops]
    assert forwarded_client("127.0.0.1", many_headers, TRUSTED) == "10.0.0.9"

    # A chain that fits is walked to its end.
    fitting = ", ".join([CLIENT, *trusted_hops[: MAX_FORWARDED_HOPS - 1]])
    assert forwarded_client("127.0.0.1", [fitting], TRUSTED) == CLIENT


async def proxied_client(aiohttp_client, tmp_path, **settings):
    """Serve a whole box, built as ``serve`` builds it, with rate limits of 3."""
    config = make_config(
        tmp_path / "data",
        host="127.0.0.1",
        rtmp_port=0,
        rate_limit_per_minute=3,
        **settings,
    )
    app = create_app(config)
    use_fresh_rate_window(app)
    return await aiohttp_client(app)


async def statuses_from(client, address: str, count: int) -> list[int]:
    """Send ``count`` unauthenticated API requests forwarded for ``address``."""
    statuses = []
    for _ in range(count):
        response = await client.get(
            "/api/auth/me", headers={"X-Forwarded-For": address}
        )
        statuses.append(response.status)
    return statuses


async def test_proxy_rate_limit_per_forwarded_client(aiohttp_client, tmp_path):
    client = await proxied_client(aiohttp_client, tmp_path, trusted_proxies="127.0.0.1")
    assert await statuses_from(client, CLIENT, 4) == [401, 401, 401, 429]
    # Another client behind the same proxy has its own budget.
    assert await statuses_from(client, OTHER_CLIENT, 1) == [401]


async def test_proxy_untrusted_peer_header_ignored(aiohttp_client, tmp_path):
    client = await proxied_client(
        aiohttp_client, tmp_path, trusted_proxies="10.0.0.0/8"
    )
    statuses = []
    for index in range(4):
        # A new claimed address on every request must not reset the count.
        statuses += await statuses_from(client, f"203.0.113.{index + 1}", 1)
    assert statuses == [401, 401, 401, 429]


async def test_proxy_header_ignored_by_default(aiohttp_client, tmp_path):
    client = await proxied_client(aiohttp_client, tmp_path)
    assert await statuses_from(client, CLIENT, 3) == [401, 401, 401]
    assert await statuses_from(client, OTHER_CLIENT, 1) == [429]


async def login_entries(client, forwarded_for: str) -> list[dict]:
    account = {"email": "audit@example.com", "password": "correct horse battery"}
    headers = {"X-Forwarded-For": forwarded_for}
    response = await client.post("/api/auth/register", json=account, headers=headers)
    assert response.status == 201, await response.text()
    response = await client.post(
        "/api/auth/login",
        json={**account, "password": "wrong password"},
        headers=headers,
    )
    assert response.status == 401
    entries = await all_entries(client.app)
    return [
        entry for entry in entries if entry["action"] in ("register", "login_failed")
    ]


async def test_proxy_audit_shows_forwarded_address(aiohttp_client, tmp_path):
    client = await proxied_client(aiohttp_client, tmp_path, trusted_proxies="127.0.0.1")
    entries = await login_entries(client, f"{OTHER_CLIENT}, {CLIENT}")
    assert sorted(entry["action"] for entry in entries) == ["login_failed", "register"]
    for entry in entries:
        assert entry["ip_address"] == CLIENT, entry["action"]


async def test_proxy_audit_ignores_untrusted_header(aiohttp_client, tmp_path):
    client = await proxied_client(aiohttp_client, tmp_path)
    entries = await login_entries(client, CLIENT)
    assert len(entries) == 2
    for entry in entries:
        assert entry["ip_address"] == "127.0.0.1", entry["action"]


@pytest.mark.parametrize(
    ("trusted_proxies", "expected_viewers"), [("127.0.0.1", 2), ("", 1)]
)
async def test_proxy_viewers_counted_per_forwarded_client(
    aiohttp_client, tmp_path, trusted_proxies, expected_viewers
):
    """Viewers without a session parameter count by client address and agent."""
    box = await start_box(aiohttp_client, tmp_path, trusted_proxies=trusted_proxies)
    stream = await box.create_stream()
    write_hls_tree(box, stream["id"])
    for address in (CLIENT, OTHER_CLIENT, CLIENT):
        response = await box.client.get(
            f"/hls/{stream['id']}/source/index.m3u8",
            headers={"X-Forwarded-For": address},
        )
        assert response.status == 200
    status = await box.status(stream["id"])
    assert status["viewer_count"] == expected_viewers
