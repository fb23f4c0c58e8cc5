"""Metrics read from the box's live state at each scrape.

Gauges and counters here are not updated as things happen: the collector
reads the hub, the viewer tracker, the RTMP server, the webhook dispatcher,
the recording service and the data directory's filesystem when /metrics is
requested. Parts that have not started (or have stopped) are left out.

Per-stream series carry the stream id, which is no secret (it is part of
every HLS URL), and exist only while the stream is in a publishing session,
so their number is bounded by the streams being published.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from realcast_box import __version__
from realcast_box.api.webhooks import DISPATCHER
from realcast_box.appkeys import CONFIG, HUB, RECORDINGS, RTMP_SERVER
from realcast_box.hls.viewers import VIEWERS
from realcast_box.live.hub import Hub
from realcast_box.live.publication import Publication

logger = logging.getLogger(__name__)

# Every state a rendition of a transcoding ladder can be in, so that each
# state has a series even while no rendition is in it.
RENDITION_STATES = ("starting", "active", "restarting", "shed", "failed", "dropped")


class LiveStateCollector(Collector):
    """Collects the metrics of ``app``'s parts when the registry is scraped.

    ``outbox_pending`` is the webhook outbox's depth. Reading it needs a
    database query, which cannot run inside ``collect``, so the /metrics
    handler sets it before each scrape. None leaves the metric out.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self.outbox_pending: int | None = None
        # Set while the disk usage cannot be read, so the failure is logged
        # once and not at every scrape.
        self._disk_failing = False

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "realcast_build_info",
            "Version of the running box, in the label. The value is always 1.",
            labels=["version"],
        )
        info.add_metric([__version__], 1)
        yield info
        hub = self._app.get(HUB)
        if hub is not None:
            yield from self._collect_sessions(hub)
        yield from self._collect_rtmp()
        yield from self._collect_webhooks()
        yield from self._collect_recordings()
        yield from self._collect_disk()

    def _collect_sessions(self, hub: Hub) -> Iterator[Metric]:
        publications = hub.publications()
        live = GaugeMetricFamily(
            "realcast_live_streams", "Streams with a publisher connected now."
        )
        live.add_metric([], sum(p.state == "live" for p in publications))
        reconnecting = GaugeMetricFamily(
            "realcast_reconnecting_streams",
            "Streams whose publisher dropped, waiting within the reconnect window.",
        )
        waiting = sum(p.state == "reconnecting" for p in publications)
        reconnecting.add_metric([], waiting)
        yield from (live, reconnecting)
        yield from _collect_ingest(publications)
        yield from self._collect_viewers(publications)
        yield from _collect_transcoding(publications)

    def _collect_viewers(self, publications: list[Publication]) -> Iterator[Metric]:
        tracker = self._app.get(VIEWERS)
        if tracker is None:
            return
        viewers = GaugeMetricFamily(
            "realcast_viewers",
            "Playback sessions that fetched a media playlist or segment within"
            " hls_viewer_window seconds.",
            labels=["stream_id"],
        )
        for publication in publications:
            stats = tracker.stats(publication.stream_id, publication.session_id)
            viewers.add_metric([publication.stream_id], stats.viewer_count)
        yield viewers

    def _collect_rtmp(self) -> Iterator[Metric]:
        server = self._app.get(RTMP_SERVER)
        if server is None:
            return
        open_connections = GaugeMetricFamily(
            "realcast_rtmp_open_connections",
            "RTMP connections open now, publishing or not, RTMPS ones still in"
            " the TLS handshake included.",
        )
        open_connections.add_metric([], server.open_connections)
        accepted = CounterMetricFamily(
            "realcast_rtmp_connections_accepted",
            "RTMP connections accepted since the box started.",
        )
        accepted.add_metric([], server.accepted_connections)
        rejected = CounterMetricFamily(
            "realcast_rtmp_connections_rejected",
            "RTMP connections closed at once because rtmp_max_connections were open.",
        )
        rejected.add_metric([], server.rejected_connections)
        yield from (open_connections, accepted, rejected)

    def _collect_webhooks(self) -> Iterator[Metric]:
        dispatcher = self._app.get(DISPATCHER)
        if dispatcher is not None:
            counts = dispatcher.counts
            attempts = CounterMetricFamily(
                "realcast_webhook_attempts",
                "Webhook delivery attempts since the box started, by outcome.",
                labels=["outcome"],
            )
            attempts.add_metric(["succeeded"], counts.attempts_succeeded)
            attempts.add_metric(["failed"], counts.attempts_failed)
            failed = CounterMetricFamily(
                "realcast_webhook_deliveries_failed",
                "Webhook deliveries given up since the box started: out of"
                " attempts, rejected with 410 Gone, or pending when their"
                " webhook was disabled for failing.",
            )
            failed.add_metric([], counts.deliveries_failed)
            yield from (attempts, failed)
        if self.outbox_pending is not None:
            pending = GaugeMetricFamily(
                "realcast_webhook_outbox_pending",
                "Webhook deliveries waiting in the outbox, in flight included.",
            )
            pending.add_metric([], self.outbox_pending)
            yield pending

    def _collect_recordings(self) -> Iterator[Metric]:
        recordings = self._app.get(RECORDINGS)
        if recordings is None:
            return
        in_progress = GaugeMetricFamily(
            "realcast_recordings_in_progress",
            "Recordings being written now, of live streams and of pulled URLs.",
        )
        in_progress.add_metric([], recordings.active_count)
        yield in_progress

    def _collect_disk(self) -> Iterator[Metric]:
        data_path = self._app[CONFIG].data_path
        try:
            usage = shutil.disk_usage(data_path)
        except OSError as exc:
            if not self._disk_failing:
                logger.warning(
                    "metrics: failed to read the disk usage of %s: %s. The disk"
                    " metrics are left out until it can be read",
                    data_path,
                    exc,
                )
            self._disk_failing = True
            return
        self._disk_failing = False
        free = GaugeMetricFamily(
            "realcast_data_dir_free_bytes",
            "Bytes free to the box on the filesystem of the data directory.",
        )
        free.add_metric([], usage.free)
        size = GaugeMetricFamily(
            "realcast_data_dir_size_bytes",
            "Size of the filesystem that contains the data directory, in bytes.",
        )
        size.add_metric([], usage.total)
        yield from (free, size)


def _collect_ingest(publications: list[Publication]) -> Iterator[Metric]:
    bitrate = GaugeMetricFamily(
        "realcast_ingest_bitrate_bits_per_second",
        "Bitrate of the publisher's audio and video over the last 5 s of media time.",
        labels=["stream_id"],
    )
    frame_rate = GaugeMetricFamily(
        "realcast_ingest_frames_per_second",
        "Video frame rate of the publisher's feed over the last 5 s of media time.",
        labels=["stream_id"],
    )
    received = CounterMetricFamily(
        "realcast_ingest_received_bytes",
        "Media bytes received in the stream's current publishing session."
        " It starts at 0 with each new session.",
        labels=["stream_id"],
    )
    for publication in publications:
        stream_id = publication.stream_id
        received.add_metric([stream_id], publication.bytes_received)
        # None while reconnecting: the measurements belong to one publisher.
        report = publication.ingest_report()
        if report is None:
            continue
        if report.bitrate_kbps is not None:
            bitrate.add_metric([stream_id], report.bitrate_kbps * 1000)
        if report.frame_rate is not None:
            frame_rate.add_metric([stream_id], report.frame_rate)
    yield from (bitrate, frame_rate, received)


def _collect_transcoding(publications: list[Publication]) -> Iterator[Metric]:
    speed = GaugeMetricFamily(
        "realcast_transcode_speed_ratio",
        "Media seconds each rendition encodes per wall-clock second over the"
        " last few seconds. Below 1 it falls behind real time.",
        labels=["stream_id", "rendition"],
    )
    counts = dict.fromkeys(RENDITION_STATES, 0)
    for publication in publications:
        if publication.ladder is None:
            continue
        for rendition in publication.ladder.status():
            state = rendition["state"]
            counts[state] = counts.get(state, 0) + 1
            if rendition["speed"] is not None:
                labels = [publication.stream_id, rendition["name"]]
                speed.add_metric(labels, rendition["speed"])
    renditions = GaugeMetricFamily(
        "realcast_transcode_renditions",
        "Renditions of the transcoding ladders of all sessions, by state.",
        labels=["state"],
    )
    for state, count in counts.items():
        renditions.add_metric([state], count)
    yield from (speed, renditions)
