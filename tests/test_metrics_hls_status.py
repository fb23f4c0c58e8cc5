"""/metrics counts /hls responses under the status that the box sent.

A real box runs in-process and tests/publisher.py pushes real RTMP.
"""

from __future__ import annotations

import pytest

from tests.box import run_publisher, start_box
from tests.hls_helpers import playlist_uris
from tests.test_metrics import first_segment_uri, scrape, wait_for_hls

pytestmark = pytest.mark.timeout(120)


async def test_metrics_hls_range_statuses(aiohttp_client, tmp_path):
    # FileResponse picks 206, 304 or 416 only when it sends its headers,
    # after the request middleware read the response's status.
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    stream = await box.create_stream()
    stream_id = stream["id"]
    code, output = await run_publisher(
        box.rtmp_url(stream["stream_key"]), "--seconds", "4"
    )
    assert code == 0, output
    await wait_for_hls(box, stream_id)
    response = await box.client.get(f"/hls/{stream_id}/index.m3u8")
    media_path = f"/hls/{stream_id}/{playlist_uris(await response.text())[0]}"
    response = await box.client.get(media_path)
    media_base = media_path.split("?")[0].rsplit("/", 1)[0]
    segment_path = f"{media_base}/{first_segment_uri(await response.text())}"
    before = await scrape(box)

    statuses = []
    for headers in (
        {"Range": "bytes=0-99"},
        {"If-None-Match": "*"},
        {"Range": "bytes=999999999-"},
    ):
        response = await box.client.get(segment_path, headers=headers)
        await response.read()
        statuses.append(response.status)
    after = await scrape(box)

    def delta(status: int) -> float:
        labels = {"kind": "segment", "status": str(status)}
        name = "realcast_hls_requests_total"
        return after.count(name, **labels) - before.count(name, **labels)

    assert statuses == [206, 304, 416]
    assert delta(206) == 1
    assert delta(304) == 1
    assert delta(416) == 1
    assert delta(200) == 0
