"""The /metrics endpoint, read with prometheus_client's own parser.

A real box runs in-process. tests/publisher.py pushes real RTMP, and
tests/webhook_receiver.py receives the webhooks. Counters are compared as the
difference between two scrapes, so requests made by the helpers before the
first scrape do not matter. No test asserts how long anything took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from realcast_box import __version__
from realcast_box.errors import ConfigError
from realcast_box.metrics import METRICS
from realcast_box.metrics.http import hls_kind
from tests.box import Box, start_box, start_publisher
from tests.conftest import make_config
from tests.hls_helpers import playlist_uris
from tests.test_webhooks_e2e import create_app_id, create_webhook, send_test
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.timeout(180)

FPS = 25
# tests/publisher.py encodes video at 500 kbit/s and AAC audio at 96 kbit/s.
PUBLISHER_BITS_PER_SECOND = 596_000
PUSH_SECONDS = 10
WAIT_SECONDS = 60.0
TOKEN = "metrics-token-3f9a7c1e5b"
SMALL_RENDITION = {
    "name": "120p",
    "width": 160,
    "height": 120,
    "bitrate": 100,
    "fps": 25,
}


class Scrape:
    """One /metrics response, parsed: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in self.families:
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        """Return the sample ``name`` with exactly ``labels``, or None."""
        return self.samples.get((name, frozenset(labels.items())))

    def count(self, name: str, **labels: str) -> float:
        """Return a counter's sample, 0 when the series does not exist yet."""
        return self.value(name, **labels) or 0.0

    def label_values(self) -> list[tuple[str, str, str]]:
        """Return (sample name, label name, label value) of every sample."""
        return [
            (name, label, value)
            for name, labels in self.samples
            for label, value in labels
        ]


async def scrape(box: Box, headers: dict[str, str] | None = None) -> Scrape:
    response = await box.client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    return Scrape(await response.text())


async def wait_for_scrape(
    box: Box, condition: Callable[[Scrape], bool], what: str
) -> Scrape:
    """Scrape until ``condition`` holds; fail naming ``what`` after WAIT_SECONDS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while True:
        result = await scrape(box)
        if condition(result):
            return result
        assert loop.time() < deadline, f"timed out waiting for {what}:\n{result.text}"
        await asyncio.sleep(0.2)


async def create_recorded_stream(box: Box) -> dict:
    """Create a stream that is recorded and transcoded to SMALL_RENDITION."""
    response = await box.client.post(
        "/api/apps",
        json={"name": "Metrics app", "settings": {"recording_enabled": True}},
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    app_id = (await response.json())["id"]
    response = await box.client.post(
        "/api/transcoding-profiles",
        json={
            "app_id": app_id,
            "name": "Small",
            "qualities": [SMALL_RENDITION],
            "audio_bitrate": 64,
        },
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    profile_id = (await response.json())["id"]
    response = await box.client.post(
        "/api/streams",
        json={
            "app_id": app_id,
            "title": "Metered",
            "settings": {"transcoding_profile_id": profile_id},
        },
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def wait_for_hls(box: Box, stream_id: str) -> None:
    """Wait until the first variant's media playlist lists a whole segment.

    The media playlist is read from disk, because each request for it
    without a session signature counts as a new viewer.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while True:
        response = await box.client.get(f"/hls/{stream_id}/index.m3u8")
        if response.status == 200:
            variant = playlist_uris(await response.text())[0].split("?")[0]
            media = box.hub.hls_root / stream_id / variant
            # The file appears with the first whole segment.
            if media.exists() and "#EXTINF" in media.read_text():
                return
        assert loop.time() < deadline, f"no HLS segment for {stream_id}"
        await asyncio.sleep(0.2)


def first_part_uri(media_playlist: str) -> str:
    """Return the URI of the playlist's first partial segment (EXT-X-PART)."""
    return next(
        uri
        for line in media_playlist.splitlines()
        if line.startswith("#EXT-X-PART:")
        for uri in playlist_uris(line)
    )


def first_segment_uri(media_playlist: str) -> str:
    """Return the URI of the playlist's first media segment (not a part)."""
    return next(
        line.strip()
        for line in media_playlist.splitlines()
        if line.strip() and not line.startswith("#")
    )


async def fetch(box: Box, path: str) -> bytes:
    response = await box.client.get(path)
    assert response.status == 200, await response.text()
    return await response.read()


async def test_metrics_push_reports_live_state(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await create_recorded_stream(box)
    stream_id = stream["id"]
    labels = {"stream_id": stream_id}
    rendition = {**labels, "rendition": SMALL_RENDITION["name"]}
    process = await start_publisher(
        box.rtmp_url(stream["stream_key"]),
        "--seconds",
        str(PUSH_SECONDS),
        "--realtime",
    )
    try:
        await wait_for_hls(box, stream_id)
        during = await wait_for_scrape(
            box,
            lambda s: (
                s.value("realcast_ingest_frames_per_second", **labels) is not None
                and s.value("realcast_recordings_in_progress") == 1
                and s.value("realcast_transcode_speed_ratio", **rendition) is not None
            ),
            "the ingest frame rate, the recording and the transcoding speed",
        )

        # Fetch as a player does: multivariant, media playlist, init, segment.
        multivariant = (await fetch(box, f"/hls/{stream_id}/index.m3u8")).decode()
        media_path = f"/hls/{stream_id}/{playlist_uris(multivariant)[0]}"
        media_playlist = (await fetch(box, media_path)).decode()
        media_base = media_path.split("?")[0].rsplit("/", 1)[0]
        init_uri = playlist_uris(media_playlist)[0]
        segment_uri = first_segment_uri(media_playlist)
        init = await fetch(box, f"{media_base}/{init_uri}")
        segment = await fetch(box, f"{media_base}/{segment_uri}")
        part = await fetch(box, f"{media_base}/{first_part_uri(media_playlist)}")
        after = await scrape(box)
    finally:
        await process.communicate()
    assert process.returncode == 0

    assert during.value("realcast_live_streams") == 1
    assert during.value("realcast_reconnecting_streams") == 0
    assert during.value("realcast_rtmp_open_connections") >= 1
    assert during.value("realcast_rtmp_connections_accepted_total") >= 1
    assert during.value("realcast_recordings_in_progress") == 1
    assert during.value("realcast_ingest_received_bytes_total", **labels) > 0
    frame_rate = during.value("realcast_ingest_frames_per_second", **labels)
    assert abs(frame_rate - FPS) <= 1, frame_rate
    bitrate = during.value("realcast_ingest_bitrate_bits_per_second", **labels)
    assert bitrate is not None
    # x264 undershoots its target on the publisher's synthetic picture (the
    # box measured about 496 kbit/s in all), so the bounds are wide.
    assert 0.5 * PUBLISHER_BITS_PER_SECOND <= bitrate, bitrate
    assert bitrate <= 1.5 * PUBLISHER_BITS_PER_SECOND, bitrate

    assert during.value("realcast_transcode_speed_ratio", **rendition) > 0
    assert during.value("realcast_transcode_renditions", state="active") == 1
    assert during.value("realcast_transcode_renditions", state="failed") == 0

    # The media playlist fetch made this client a viewer.
    assert after.value("realcast_viewers", **labels) == 1
    playlists = after.count(
        "realcast_hls_requests_total", kind="playlist", status="200"
    ) - during.count("realcast_hls_requests_total", kind="playlist", status="200")
    inits = after.count(
        "realcast_hls_requests_total", kind="init", status="200"
    ) - during.count("realcast_hls_requests_total", kind="init", status="200")
    segments = after.count(
        "realcast_hls_requests_total", kind="segment", status="200"
    ) - during.count("realcast_hls_requests_total", kind="segment", status="200")
    assert playlists == 2
    assert inits == 1
    assert segments == 1
    parts = after.count(
        "realcast_hls_requests_total", kind="part", status="200"
    ) - during.count("realcast_hls_requests_total", kind="part", status="200")
    assert parts == 1
    playlist_bytes = after.count(
        "realcast_hls_response_bytes_total", kind="playlist"
    ) - during.count("realcast_hls_response_bytes_total", kind="playlist")
    assert playlist_bytes == len(multivariant.encode()) + len(media_playlist.encode())
    init_bytes = after.count(
        "realcast_hls_response_bytes_total", kind="init"
    ) - during.count("realcast_hls_response_bytes_total", kind="init")
    assert init_bytes == len(init)
    segment_bytes = after.count(
        "realcast_hls_response_bytes_total", kind="segment"
    ) - during.count("realcast_hls_response_bytes_total", kind="segment")
    assert segment_bytes == len(segment)
    part_bytes = after.count(
        "realcast_hls_response_bytes_total", kind="part"
    ) - during.count("realcast_hls_response_bytes_total", kind="part")
    assert part_bytes == len(part)
    playlist_timings = after.count(
        "realcast_hls_request_duration_seconds_count", kind="playlist"
    ) - during.count("realcast_hls_request_duration_seconds_count", kind="playlist")
    assert playlist_timings == 2

    # Stream ids appear only as stream_id values, and keys and paths not at all.
    for name, label, value in during.label_values() + after.label_values():
        assert stream["stream_key"] not in value, (name, label)
        assert "/hls/stream_" not in value, (name, label, value)
        if stream_id in value:
            assert label == "stream_id", (name, label, value)

    ended = await wait_for_scrape(
        box,
        lambda s: (
            s.value("realcast_live_streams") == 0
            and s.value("realcast_recordings_in_progress") == 0
        ),
        "the end of the session and its recording",
    )
    assert ended.value("realcast_ingest_frames_per_second", **labels) is None
    assert ended.value("realcast_viewers", **labels) is None


async def test_metrics_rtmp_connections_rejected(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, rtmp_max_connections=1)
    # Idle TCP connections: the box keeps one open until its setup timeout.
    _, first = await asyncio.open_connection("127.0.0.1", box.rtmp_port)
    try:
        counted = await wait_for_scrape(
            box,
            lambda s: s.value("realcast_rtmp_open_connections") == 1,
            "the first connection",
        )
        second_reader, second = await asyncio.open_connection(
            "127.0.0.1", box.rtmp_port
        )
        # The box closes the second connection at once, before any byte.
        try:
            data = await asyncio.wait_for(second_reader.read(), WAIT_SECONDS)
        except ConnectionResetError:
            data = b""
        second.close()
        assert data == b""
        rejected = await wait_for_scrape(
            box,
            lambda s: s.value("realcast_rtmp_connections_rejected_total") == 1,
            "the rejected connection",
        )
    finally:
        first.close()
    closed = await wait_for_scrape(
        box,
        lambda s: s.value("realcast_rtmp_open_connections") == 0,
        "the first connection to close",
    )

    assert counted.value("realcast_rtmp_connections_accepted_total") == 1
    assert counted.value("realcast_rtmp_connections_rejected_total") == 0
    assert rejected.value("realcast_rtmp_open_connections") == 1
    assert rejected.value("realcast_rtmp_connections_accepted_total") == 1
    assert closed.value("realcast_rtmp_connections_accepted_total") == 1


async def test_metrics_api_routes_by_pattern(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    streams = [await box.create_stream(f"Stream {n}") for n in range(2)]
    route = "/api/streams/{stream_id}"
    before = await scrape(box)

    for _ in range(3):
        response = await box.client.get("/api/apps", headers=box.auth)
        assert response.status == 200
    for stream in streams:
        response = await box.client.get(
            f"/api/streams/{stream['id']}", headers=box.auth
        )
        assert response.status == 200
    response = await box.client.get("/api/streams/stream_0000000000000000")
    assert response.status == 401
    response = await box.client.get("/api/no-such-route-7d1c")
    assert response.status == 404
    after = await scrape(box)

    def delta(name: str, **labels: str) -> float:
        return after.count(name, **labels) - before.count(name, **labels)

    requests = "realcast_http_requests_total"
    timings = "realcast_http_request_duration_seconds_count"
    assert delta(requests, method="GET", route="/api/apps", status="200") == 3
    assert delta(timings, method="GET", route="/api/apps") == 3
    assert delta(requests, method="GET", route=route, status="200") == 2
    assert delta(requests, method="GET", route=route, status="401") == 1
    assert delta(timings, method="GET", route=route) == 3
    assert delta(requests, method="GET", route="unmatched", status="404") == 1
    buckets = after.value(
        "realcast_http_request_duration_seconds_bucket",
        method="GET",
        route="/api/apps",
        le="+Inf",
    )
    assert buckets == after.value(timings, method="GET", route="/api/apps")
    for name, label, value in after.label_values():
        assert "no-such-route" not in value, (name, label)
        for stream in streams:
            assert stream["id"] not in value, (name, label)
            assert stream["stream_key"] not in value, (name, label)


async def test_metrics_webhook_failures_and_outbox(aiohttp_client, tmp_path):
    receiver = Receiver()
    await receiver.start()
    try:
        box = await start_box(
            aiohttp_client,
            tmp_path,
            webhook_retry_base_seconds=0.05,
            webhook_max_attempts=2,
        )
        app_id = await create_app_id(box)
        webhook = await create_webhook(box, receiver, app_id, ["webhook.test"])
        receiver.statuses = [500, 500]
        receiver.hold = True

        await send_test(box, webhook["id"])
        await asyncio.wait_for(receiver.entered.wait(), WAIT_SECONDS)
        in_flight = await scrape(box)
        receiver.release()
        failed = await wait_for_scrape(
            box,
            lambda s: s.count("realcast_webhook_deliveries_failed_total") == 1,
            "the failed delivery",
        )
    finally:
        await receiver.close()

    assert in_flight.value("realcast_webhook_outbox_pending") == 1
    assert in_flight.count("realcast_webhook_deliveries_failed_total") == 0
    assert len(receiver.requests) == 2
    assert failed.value("realcast_webhook_attempts_total", outcome="failed") == 2
    assert failed.value("realcast_webhook_attempts_total", outcome="succeeded") == 0
    assert failed.value("realcast_webhook_outbox_pending") == 0


async def test_metrics_token_required_when_set(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, metrics_token=TOKEN)

    missing = await box.client.get("/metrics")
    wrong = await box.client.get(
        "/metrics", headers={"Authorization": "Bearer not-the-token"}
    )
    user_token = await box.client.get("/metrics", headers=box.auth)
    accepted = await scrape(box, {"Authorization": f"Bearer {TOKEN}"})

    for response in (missing, wrong, user_token):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        body = await response.json()
        assert body["status_code"] == 401
        assert "metrics" in body["detail"]
        assert TOKEN not in body["detail"]
    assert accepted.value("realcast_live_streams") == 0


async def test_metrics_token_non_utf8_rejected(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, metrics_token=TOKEN)
    # The request is written as raw bytes, so that its token can be bytes
    # that are not valid UTF-8.
    reader, writer = await asyncio.open_connection(box.client.host, box.client.port)
    writer.write(
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    reply = await reader.read()
    writer.close()

    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 401 Unauthorized"
    assert b"invalid metrics token" in reply


@pytest.mark.parametrize("token", [" padded-token", "padded-token\n", "tab\tinside"])
def test_metrics_token_unsendable_rejected(tmp_path, token):
    # HTTP drops spaces around a header value and forbids most control
    # characters in it, so such a token would lock every scraper out.
    with pytest.raises(ConfigError) as raised:
        make_config(tmp_path, metrics_token=token)
    message = str(raised.value)
    assert "metrics_token" in message
    assert repr(token) not in message
    assert "spaces" in message


async def test_metrics_text_format_and_openmetrics(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)

    plain = await box.client.get("/metrics")
    openmetrics = await box.client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )

    assert plain.status == 200
    assert plain.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert plain.headers["Cache-Control"] == "no-store"
    assert openmetrics.status == 200
    content_type = openmetrics.headers["Content-Type"]
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert (await openmetrics.text()).endswith("# EOF\n")
    parsed = Scrape(await plain.text())
    assert parsed.value("realcast_build_info", version=__version__) == 1
    assert parsed.value("realcast_data_dir_free_bytes") > 0
    assert parsed.value("realcast_data_dir_size_bytes") > 0
    assert parsed.value("realcast_webhook_outbox_pending") == 0
    assert parsed.value("realcast_recordings_in_progress") == 0


async def test_metrics_disabled_returns_404(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, metrics_enabled=False)

    response = await box.client.get("/metrics")

    assert response.status == 404
    assert (await response.json())["status_code"] == 404
    assert METRICS not in box.app


async def test_metrics_registry_per_box(aiohttp_client, tmp_path):
    first = await start_box(aiohttp_client, tmp_path / "first")
    second = await start_box(aiohttp_client, tmp_path / "second")
    before = await scrape(second)

    for _ in range(2):
        response = await first.client.get("/api/apps", headers=first.auth)
        assert response.status == 200
    first_scrape = await scrape(first)
    second_scrape = await scrape(second)

    labels = {"method": "GET", "route": "/api/apps", "status": "200"}
    assert first_scrape.count("realcast_http_requests_total", **labels) == 2
    assert second_scrape.count(
        "realcast_http_requests_total", **labels
    ) == before.count("realcast_http_requests_total", **labels)


@pytest.mark.parametrize(
    ("relative", "kind"),
    [
        ("index.m3u8", "playlist"),
        ("source-ab12/index.m3u8", "playlist"),
        ("source-ab12/init-0.mp4", "init"),
        ("source-ab12/seg-7.m4s", "segment"),
        ("source-ab12/part-7.2.m4s", "part"),
        ("source-ab12/part-7.m4s", "segment"),
        ("source-ab12/notes.txt", "other"),
    ],
)
def test_metrics_hls_kind(relative, kind):
    assert hls_kind(relative) == kind
