"""TLS: the cert command, TLS settings errors, RTMPS ingest and HTTPS playback.

Certificates come from ``realcast-box cert`` itself. The publisher is the
ffmpeg CLI over RTMPS. The HTTPS client is aiohttp trusting the generated
certificate, whose SHA-256 fingerprint is checked as well.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import ssl
import stat
import tomllib
import warnings
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from realcast_box import tls
from realcast_box.app import RTMP_SERVER, TLS_CONTEXT, create_app
from realcast_box.appkeys import CONFIG
from realcast_box.cli import _start_https
from realcast_box.config import load_config
from realcast_box.errors import ConfigError
from realcast_box.hls import routes as hls_routes
from tests.box import (
    decode_file,
    download_hls,
    first_frame_is_keyframe,
    parse_sent,
    run_ffmpeg_publisher,
    run_publisher,
    start_box,
)
from tests.test_cli import ServeProcess, free_port, run_cli
from tests.test_hls_browser import require_chromium
from tests.test_hls_cache import public_stream
from tests.test_ui_browser import open_browser, sign_up

FPS = 25
SEGMENT_SECONDS = 2.0
# Bytes a plain RTMP client sends first: C0 (version 3) and a 1536-byte C1.
PLAIN_RTMP_HELLO = b"\x03" + bytes(1536)
# Generous limit for the box to close a connection that failed the TLS
# handshake or sent nothing. It bounds the wait and measures nothing.
CLOSE_WAIT_LIMIT = 30.0


def make_cert(folder: Path, *hosts: str) -> tuple[Path, Path, str]:
    """Run ``realcast-box cert``; return the certificate, key and fingerprint."""
    args = ["cert", "--out-dir", str(folder)]
    for host in hosts or ("127.0.0.1",):
        args += ["--host", host]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    match = re.search(r"SHA-256 fingerprint: ([0-9A-F:]{95})", result.stdout)
    assert match, result.stdout
    return folder / "tls-cert.pem", folder / "tls-key.pem", match.group(1)


def der_fingerprint(der: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def client_context(cert_path: Path) -> ssl.SSLContext:
    """Return a client context that trusts only ``cert_path`` and checks names."""
    return ssl.create_default_context(cafile=str(cert_path))


async def peer_fingerprint(port: int, cert_path: Path) -> str:
    """Connect over TLS, verifying against ``cert_path``; return the fingerprint."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=client_context(cert_path),
        server_hostname="127.0.0.1",
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return der_fingerprint(der)


def tls_settings(cert_path: Path, key_path: Path) -> dict:
    return {
        "tls_cert_file": str(cert_path),
        "tls_key_file": str(key_path),
        "rtmps_port": 0,
        "https_port": 0,
    }


async def read_until_closed(
    reader: asyncio.StreamReader, limit: float = CLOSE_WAIT_LIMIT
) -> bytes:
    """Read until the peer closes or resets the connection; fail after ``limit``."""
    received = b""
    async with asyncio.timeout(limit):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


# The cert command


def test_tls_cert_command_writes_pair(tmp_path):
    out_dir = tmp_path / "certs"
    result = run_cli(
        *("cert", "--host", "box.local", "--host", "192.168.1.10"),
        *("--out-dir", str(out_dir)),
    )
    assert result.returncode == 0, result.stderr
    cert_path = out_dir / "tls-cert.pem"
    key_path = out_dir / "tls-key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644

    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert san.get_values_for_type(x509.DNSName) == ["box.local"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "192.168.1.10"
    ]
    constraints = certificate.extensions.get_extension_for_class(
        x509.BasicConstraints
    ).value
    assert constraints.ca is False
    assert certificate.issuer == certificate.subject
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == certificate.public_key()

    der = certificate.public_bytes(serialization.Encoding.DER)
    assert f"SHA-256 fingerprint: {der_fingerprint(der)}" in result.stdout
    settings_lines = "\n".join(
        line for line in result.stdout.splitlines() if line.startswith("tls_")
    )
    assert tomllib.loads(settings_lines) == {
        "tls_cert_file": str(cert_path.absolute()),
        "tls_key_file": str(key_path.absolute()),
    }


def test_tls_cert_command_refuses_overwrite(tmp_path):
    cert_path, key_path, first_fingerprint = make_cert(tmp_path)
    cert_before = cert_path.read_bytes()
    key_before = key_path.read_bytes()

    result = run_cli("cert", "--host", "127.0.0.1", "--out-dir", str(tmp_path))
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert "--force" in result.stderr
    assert cert_path.read_bytes() == cert_before
    assert key_path.read_bytes() == key_before

    key_path.chmod(0o644)
    result = run_cli(
        "cert", "--host", "127.0.0.1", "--out-dir", str(tmp_path), "--force"
    )
    assert result.returncode == 0, result.stderr
    assert first_fingerprint not in result.stdout
    assert cert_path.read_bytes() != cert_before
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert list(tmp_path.glob(".*.tmp")) == []


def test_tls_cert_command_defaults_to_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    result = run_cli("cert", "--host", "box.local", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert (data_dir / "tls-cert.pem").is_file()
    assert stat.S_IMODE((data_dir / "tls-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert "REALCAST_TLS_CERT_FILE" in result.stdout


def test_tls_cert_command_rejects_invalid_host(tmp_path):
    result = run_cli("cert", "--host", "box local", "--out-dir", str(tmp_path))
    assert result.returncode == 2
    assert "invalid host 'box local'" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        # An internationalized name goes into the certificate in its
        # ASCII (xn--) form, which is what clients compare.
        ("bücher.example", x509.DNSName("xn--bcher-kva.example")),
        ("BÜCHER.example", x509.DNSName("xn--bcher-kva.example")),
        # A trailing dot makes a name absolute, and an IP address stays one.
        ("192.0.2.10.", x509.IPAddress(ipaddress.ip_address("192.0.2.10"))),
        ("[2001:db8::10]", x509.IPAddress(ipaddress.ip_address("2001:db8::10"))),
    ],
)
def test_tls_cert_host_forms(host, expected):
    assert tls.parse_host(host) == expected


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("*.box.local", "wildcard"),
        ("☃.example", "xn--"),
        ("a" * 64 + ".local", "63 characters"),
        (".".join(["box"] * 64), "253 characters"),
        ("box_1.local", "letters, digits and hyphens"),
    ],
)
def test_tls_cert_host_rejected_with_hint(host, hint):
    with pytest.raises(ValueError) as raised:
        tls.parse_host(host)
    message = str(raised.value)
    assert repr(host) in message
    assert hint in message


def test_tls_cert_command_sets_days(tmp_path):
    result = run_cli(
        "cert", "--host", "box.local", "--days", "30", "--out-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    certificate = x509.load_pem_x509_certificate(
        (tmp_path / "tls-cert.pem").read_bytes()
    )
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=30)
    assert certificate.not_valid_before_utc < datetime.datetime.now(datetime.UTC)


# Settings errors


def test_tls_config_cert_without_key(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(environ={}, overrides={"tls_cert_file": str(tmp_path / "c.pem")})
    message = str(error.value)
    assert "tls_cert_file is set but tls_key_file is empty" in message
    assert "realcast-box cert" in message


def test_tls_config_key_without_cert(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(environ={}, overrides={"tls_key_file": str(tmp_path / "k.pem")})
    assert "tls_key_file is set but tls_cert_file is empty" in str(error.value)


def test_tls_config_port_clash(tmp_path):
    overrides = {
        "tls_cert_file": "c.pem",
        "tls_key_file": "k.pem",
        "http_port": 9000,
        "https_port": 9000,
    }
    with pytest.raises(ConfigError) as error:
        load_config(environ={}, overrides=overrides)
    assert "https_port: it is also the http_port" in str(error.value)


def test_tls_config_files_from_environment(tmp_path):
    environ = {
        "REALCAST_TLS_CERT_FILE": "/etc/box/cert.pem",
        "REALCAST_TLS_KEY_FILE": "/etc/box/key.pem",
        "REALCAST_RTMPS_PORT": "2936",
    }
    config = load_config(environ=environ)
    assert config.tls_enabled
    assert config.rtmps_port == 2936
    assert config.https_port == 8443
    assert not load_config(environ={}).tls_enabled


def test_tls_context_file_errors(tmp_path):
    cert_path, key_path, _ = make_cert(tmp_path / "a")
    other_cert, other_key, _ = make_cert(tmp_path / "b")
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted-key.pem"
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    missing = tmp_path / "missing.pem"
    cases = [
        (missing, key_path, f"tls_cert_file {missing} not found"),
        (cert_path, missing, f"tls_key_file {missing} not found"),
        (tmp_path, key_path, f"tls_cert_file {tmp_path} is a directory"),
        (not_pem, key_path, "contains no valid PEM certificate"),
        (cert_path, not_pem, "contains no valid PEM private key"),
        (cert_path, encrypted, "protected with a passphrase"),
        (cert_path, other_key, "is not the private key of the certificate"),
        (other_cert, key_path, "is not the private key of the certificate"),
    ]
    for cert_file, key_file, expected in cases:
        with pytest.raises(ConfigError) as error:
            tls.load_server_context(str(cert_file), str(key_file))
        assert expected in str(error.value), (cert_file, key_file)

    config = load_config(environ={}, overrides=tls_settings(cert_path, other_key))
    with pytest.raises(ConfigError, match="is not the private key"):
        create_app(config)


def test_tls_context_chain_order_and_der(tmp_path):
    cert_path, key_path, _ = make_cert(tmp_path / "a")
    issuer_path, _, _ = make_cert(tmp_path / "b")

    # The server certificate followed by its issuer loads.
    chain = tmp_path / "chain.pem"
    chain.write_bytes(cert_path.read_bytes() + issuer_path.read_bytes())
    assert tls.load_server_context(str(chain), str(key_path)) is not None

    # The issuer first: the error message names the certificate to move.
    reversed_chain = tmp_path / "reversed-chain.pem"
    reversed_chain.write_bytes(issuer_path.read_bytes() + cert_path.read_bytes())
    with pytest.raises(ConfigError) as error:
        tls.load_server_context(str(reversed_chain), str(key_path))
    message = str(error.value)
    assert str(reversed_chain) in message
    assert "certificate 2" in message
    assert "first" in message

    # A DER file: the message names the conversion.
    der = tmp_path / "cert.der"
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    der.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    with pytest.raises(ConfigError) as error:
        tls.load_server_context(str(der), str(key_path))
    message = str(error.value)
    assert str(der) in message
    assert "DER" in message
    assert "openssl x509 -inform DER" in message


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
async def test_tls_context_rejects_old_versions(tmp_path, version):
    cert_path, key_path, _ = make_cert(tmp_path)
    server_context = tls.load_server_context(str(cert_path), str(key_path))
    assert server_context.minimum_version == ssl.TLSVersion.TLSv1_2

    async def echo(reader, writer):
        writer.write(await reader.read(5))
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    old_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old_client.check_hostname = False
    old_client.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        # Python deprecates the old versions that this client must offer.
        warnings.simplefilter("ignore", DeprecationWarning)
        old_client.minimum_version = getattr(ssl.TLSVersion, version)
        old_client.maximum_version = getattr(ssl.TLSVersion, version)
    old_client.set_ciphers("ALL:@SECLEVEL=0")
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection("127.0.0.1", port, ssl=old_client)
        # TLS 1.2 from the same machine completes the handshake.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=client_context(cert_path),
            server_hostname="127.0.0.1",
        )
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of any mode")
def test_tls_context_unreadable_key(tmp_path):
    cert_path, key_path, _ = make_cert(tmp_path)
    key_path.chmod(0)
    with pytest.raises(ConfigError, match="not readable"):
        tls.load_server_context(str(cert_path), str(key_path))


def test_tls_serve_bad_key_fails_clearly(tmp_path):
    cert_path, _, _ = make_cert(tmp_path / "a")
    _, other_key, _ = make_cert(tmp_path / "b")
    result = run_cli(
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        env={
            "REALCAST_TLS_CERT_FILE": str(cert_path),
            "REALCAST_TLS_KEY_FILE": str(other_key),
        },
    )
    assert result.returncode == 1
    assert "failed to start" in result.stderr
    assert "is not the private key" in result.stderr
    assert "Traceback" not in result.stderr


# RTMPS and HTTPS


async def test_tls_rtmps_publish_plays_over_https(aiohttp_client, tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg CLI missing: .ci/run installs it with apt-get")
    cert_path, key_path, fingerprint = make_cert(tmp_path / "certs")
    box = await start_box(aiohttp_client, tmp_path, **tls_settings(cert_path, key_path))
    rtmps_port = box.app[RTMP_SERVER].tls_sockets[0].getsockname()[1]
    runner = box.client.server.runner
    plain_addresses = set(runner.addresses)
    await _start_https(runner, box.app[CONFIG], box.app[TLS_CONTEXT])
    (https_address,) = set(runner.addresses) - plain_addresses
    https_url = f"https://127.0.0.1:{https_address[1]}"

    connector = aiohttp.TCPConnector(ssl=client_context(cert_path))
    async with aiohttp.ClientSession(https_url, connector=connector) as session:
        async with session.get("/healthz") as response:
            assert response.status == 200
        assert await peer_fingerprint(https_address[1], cert_path) == fingerprint

        response = await session.post(
            "/api/apps", json={"name": "TLS app"}, headers=box.auth
        )
        assert response.status == 201, await response.text()
        app_id = (await response.json())["id"]
        response = await session.post(
            "/api/streams",
            json={"app_id": app_id, "title": "Over TLS"},
            headers=box.auth,
        )
        assert response.status == 201, await response.text()
        stream = await response.json()
        assert stream["rtmp_url"] == f"rtmps://127.0.0.1:{rtmps_port}/live"
        assert stream["plain_rtmp_url"] == f"rtmp://127.0.0.1:{box.rtmp_port}/live"
        hls_path = f"/hls/{stream['id']}/index.m3u8"
        assert stream["hls_url"] == f"{https_url}{hls_path}"
        # The URLs name the host and port that the client used over HTTPS.
        headers = {**box.auth, "Host": "box.example.com:9443"}
        response = await session.get(f"/api/streams/{stream['id']}", headers=headers)
        named = await response.json()
        assert named["hls_url"] == f"https://box.example.com:9443{hls_path}"
        assert named["rtmp_url"] == f"rtmps://box.example.com:{rtmps_port}/live"

        # The ffmpeg CLI skips certificate checks by default. With them on, it
        # shows that a verifying encoder such as OBS accepts the certificate
        # once it is trusted.
        code, output = await run_ffmpeg_publisher(
            f"{stream['rtmp_url']}/{stream['stream_key']}",
            4,
            output_options=("-tls_verify", "1", "-ca_file", str(cert_path)),
        )
        assert code == 0, output
        status = await box.wait_for_status(stream["id"], "offline")
        assert status["started_at"] is not None

        download = await download_hls(session, hls_path, tmp_path / "dl")
    assert "#EXT-X-ENDLIST" in download.media_playlist
    assert download.segment_files, download.media_playlist
    assert first_frame_is_keyframe(download.segment_files[0])
    decoded = decode_file(download.joined_files[0])
    assert decoded.video_frames == 4 * FPS
    assert decoded.audio_frames > 0
    assert abs(decoded.duration - 4) <= SEGMENT_SECONDS

    # The same box still serves plain HTTP, with http:// URLs.
    response = await box.client.get(f"/api/streams/{stream['id']}", headers=box.auth)
    body = await response.json()
    assert body["hls_url"].startswith("http://")
    assert body["rtmp_url"].startswith("rtmps://")


async def test_tls_ui_shows_rtmps_server(aiohttp_client, tmp_path):
    require_chromium()
    cert_path, key_path, _ = make_cert(tmp_path / "certs")
    box = await start_box(aiohttp_client, tmp_path, **tls_settings(cert_path, key_path))
    rtmps_port = box.app[RTMP_SERVER].tls_sockets[0].getsockname()[1]
    runner = box.client.server.runner
    plain_addresses = set(runner.addresses)
    await _start_https(runner, box.app[CONFIG], box.app[TLS_CONTEXT])
    (https_address,) = set(runner.addresses) - plain_addresses

    async with open_browser(tmp_path, ignore_https_errors=True) as (page, console):
        await sign_up(page, f"https://127.0.0.1:{https_address[1]}/")
        await page.get_by_label("Name", exact=True).fill("Studio")
        await page.get_by_role("button", name="Create app").click()
        await page.get_by_role("heading", name="Studio", exact=True).wait_for(
            timeout=5_000
        )
        await page.get_by_label("Title").fill("Encrypted show")
        await page.get_by_role("button", name="Create stream").click()
        await page.get_by_role("heading", name="Encrypted show", exact=True).wait_for(
            timeout=5_000
        )
        server = await page.get_by_label("Server").input_value()
        plain_note = await page.locator("#obs-plain-server").text_content()
        # The chat WebSocket of an HTTPS page goes over wss:// to the same port.
        await page.get_by_text("Connected as Olive Owner").wait_for(timeout=10_000)
        await page.screenshot(path=tmp_path / "stream-tls.png", full_page=True)

    assert server == f"rtmps://127.0.0.1:{rtmps_port}/live"
    assert plain_note.endswith(f"rtmp://127.0.0.1:{box.rtmp_port}/live")
    assert not [line for line in console if line.startswith("pageerror")], console


async def test_tls_plain_rtmp_to_rtmps_port(aiohttp_client, tmp_path):
    cert_path, key_path, _ = make_cert(tmp_path / "certs")
    box = await start_box(
        aiohttp_client,
        tmp_path,
        **tls_settings(cert_path, key_path),
        rtmp_read_timeout=2.0,
    )
    rtmp_server = box.app[RTMP_SERVER]
    rtmps_port = rtmp_server.tls_sockets[0].getsockname()[1]

    # A plain RTMP handshake is not a TLS ClientHello: the box closes the
    # connection rather than waiting for more bytes.
    reader, writer = await asyncio.open_connection("127.0.0.1", rtmps_port)
    writer.write(PLAIN_RTMP_HELLO)
    await writer.drain()
    received = await read_until_closed(reader)
    writer.close()
    # Whatever came back (a TLS alert at most) is no RTMP S0+S1 reply.
    assert not received.startswith(b"\x03")

    # A client that connects and never starts the handshake is closed after
    # the handshake timeout (rtmp_read_timeout).
    reader, writer = await asyncio.open_connection("127.0.0.1", rtmps_port)
    assert await read_until_closed(reader) == b""
    writer.close()

    # RTMPS still accepts connections and completes the RTMP handshake.
    context = client_context(cert_path)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", rtmps_port, ssl=context, server_hostname="127.0.0.1"
    )
    writer.write(PLAIN_RTMP_HELLO)
    await writer.drain()
    reply = await reader.readexactly(1 + 1536)
    assert reply[0] == 3
    writer.close()

    # A whole RTMPS publish from PyAV (FFmpeg's RTMP client) still works.
    stream = await box.create_stream()
    code, output = await run_publisher(
        f"rtmps://127.0.0.1:{rtmps_port}/live/{stream['stream_key']}",
        "--seconds",
        "2",
    )
    assert code == 0, output
    sent_video, _ = parse_sent(output)
    assert sent_video == 2 * FPS
    status = await box.wait_for_status(stream["id"], "offline")
    assert status["started_at"] is not None


async def test_tls_half_open_handshakes_count(aiohttp_client, tmp_path):
    cert_path, key_path, _ = make_cert(tmp_path / "certs")
    # The read timeout, which also limits the TLS handshake, is far longer
    # than CLOSE_WAIT_LIMIT, so a close within that limit is the limit's doing.
    box = await start_box(
        aiohttp_client,
        tmp_path,
        **tls_settings(cert_path, key_path),
        rtmp_read_timeout=600.0,
        rtmp_max_connections=2,
    )
    rtmp_server = box.app[RTMP_SERVER]
    rtmps_port = rtmp_server.tls_sockets[0].getsockname()[1]
    rtmp_port = rtmp_server.sockets[0].getsockname()[1]

    # Clients that connect to RTMPS and never send a ClientHello hold a
    # socket each, so they count against rtmp_max_connections.
    half_open = []
    for _ in range(2):
        half_open.append(await asyncio.open_connection("127.0.0.1", rtmps_port))
    reader, writer = await asyncio.open_connection("127.0.0.1", rtmps_port)
    assert await read_until_closed(reader) == b""
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", rtmp_port)
    assert await read_until_closed(reader) == b""
    writer.close()
    assert rtmp_server.rejected_connections == 2
    assert rtmp_server.open_connections == 2

    # Once they go, RTMPS completes handshakes again.
    for _, half_open_writer in half_open:
        half_open_writer.close()
    for _ in range(int(CLOSE_WAIT_LIMIT / 0.05)):
        if rtmp_server.open_connections == 0:
            break
        await asyncio.sleep(0.05)
    assert rtmp_server.open_connections == 0
    context = client_context(cert_path)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", rtmps_port, ssl=context, server_hostname="127.0.0.1"
    )
    # Nothing the box dropped after the handshake, such as a stream writer
    # on the plain socket, may close that socket when it is collected.
    gc.collect()
    writer.write(PLAIN_RTMP_HELLO)
    await writer.drain()
    reply = await reader.readexactly(1 + 1536)
    assert reply[0] == 3
    writer.close()


async def test_tls_serve_https_and_rtmps(tmp_path):
    """``realcast-box serve`` with a certificate: HTTPS beside HTTP, RTMPS."""
    cert_path, key_path, fingerprint = make_cert(tmp_path / "certs")
    https_port = free_port()
    rtmps_port = free_port()
    config_path = tmp_path / "box.toml"
    config_path.write_text(
        f'tls_cert_file = "{cert_path}"\n'
        f'tls_key_file = "{key_path}"\n'
        f"https_port = {https_port}\n"
        f"rtmps_port = {rtmps_port}\n"
    )
    server = ServeProcess(tmp_path / "data", "--config", str(config_path))
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
            connector = aiohttp.TCPConnector(ssl=client_context(cert_path))
            async with (
                aiohttp.ClientSession(connector=connector) as tls_session,
                tls_session.get(f"https://127.0.0.1:{https_port}/healthz") as response,
            ):
                assert response.status == 200
        assert await peer_fingerprint(https_port, cert_path) == fingerprint
        assert await peer_fingerprint(rtmps_port, cert_path) == fingerprint
    finally:
        server.terminate()
    output = server.output()
    assert f"HTTPS API and HLS on https://127.0.0.1:{https_port}" in output
    assert f"RTMPS ingest on 127.0.0.1:{rtmps_port}" in output


async def https_box_with_hls(aiohttp_client, tmp_path) -> tuple:
    """Start a box that also serves HTTPS, with a public stream's HLS tree.

    Returns the box, the stream and a factory of HTTPS client sessions.
    """
    cert_path, key_path, _ = make_cert(tmp_path / "certs")
    box = await start_box(aiohttp_client, tmp_path, **tls_settings(cert_path, key_path))
    runner = box.client.server.runner
    plain_addresses = set(runner.addresses)
    await _start_https(runner, box.app[CONFIG], box.app[TLS_CONTEXT])
    (https_address,) = set(runner.addresses) - plain_addresses
    stream = await public_stream(box)

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            f"https://127.0.0.1:{https_address[1]}",
            connector=aiohttp.TCPConnector(ssl=client_context(cert_path)),
        )

    return box, stream, session


async def test_tls_large_segments_over_https(aiohttp_client, tmp_path, monkeypatch):
    # Under TLS the box must not write a file's bytes to the socket itself.
    direct_calls = []
    monkeypatch.setattr(
        hls_routes, "sendfile_now", lambda *args: direct_calls.append(args) or 0
    )
    box, stream, https_session = await https_box_with_hls(aiohttp_client, tmp_path)
    folder = box.hub.hls_root / stream["id"] / "source"
    # One that the cache keeps, and one larger than it keeps.
    contents = {"seg-3.m4s": os.urandom(300 * 1024), "seg-4.m4s": os.urandom(9 << 20)}
    for name, content in contents.items():
        (folder / name).write_bytes(content)

    async with https_session() as session:
        for name, content in contents.items():
            async with session.get(f"/hls/{stream['id']}/source/{name}") as response:
                assert response.status == 200
                assert await response.read() == content
    assert direct_calls == []


async def test_tls_large_segment_client_leaves(aiohttp_client, tmp_path, caplog):
    box, stream, https_session = await https_box_with_hls(aiohttp_client, tmp_path)
    # Larger than the cache keeps, so it goes out in chunks from the file.
    content = os.urandom(12 << 20)
    (box.hub.hls_root / stream["id"] / "source" / "seg-4.m4s").write_bytes(content)
    path = f"/hls/{stream['id']}/source/seg-4.m4s"
    open_files = len(os.listdir("/proc/self/fd"))

    for leave_after in (100_000, 1_000_000, 3_000_000):
        async with https_session() as session:
            async with session.get(path) as response:
                assert response.status == 200
                await response.content.readexactly(leave_after)
        # Leaving the session closes the connection in the middle of the body.
    await asyncio.sleep(0.5)

    async with https_session() as session:
        async with session.get(path) as response:
            assert await response.read() == content
    # A client that leaves is not an error of the box, so no error is logged.
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []
    assert len(os.listdir("/proc/self/fd")) <= open_files + 2
