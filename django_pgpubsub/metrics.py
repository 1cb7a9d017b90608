"""Prometheus metrics of a listener: ``listen_events --metrics-port PORT``.

Needs ``prometheus_client`` (the ``[metrics]`` extra). The counters live in
plain Python objects that only the listener's thread writes, and become
Prometheus metric families when scraped: counting an event costs one clock
read, a call and two increments, with no lock. The durable outbox gauges and the
queue usage come from one query, run when scraped, at most every
``REFRESH_INTERVAL`` seconds.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections

from django_pgpubsub.db.sql import OUTBOX_TABLE
from django_pgpubsub.observer import Observer
from django_pgpubsub.registry import Handler, handler_name

logger = logging.getLogger("django_pgpubsub.metrics")

# Seconds, for pgpubsub_handler_duration_seconds: from a cache delete to a slow
# HTTP call.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BOUNDS = (*(str(bound) for bound in BUCKETS), "+Inf")  # the "le" labels
REFRESH_INTERVAL = 5.0

GAUGES_SQL = f"""
SELECT pg_notification_queue_usage(), o.channel, o.pending, o.failed, o.oldest
FROM (SELECT 1) AS one LEFT JOIN (
    SELECT channel,
           count(*) FILTER (WHERE state = 'pending') AS pending,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'pending')) AS oldest
    FROM {OUTBOX_TABLE} GROUP BY channel
) AS o ON true
"""

MISSING_EXTRA = (
    "listen_events --metrics-port needs prometheus_client, which is not installed: "
    "pip install 'django-pg-pubsub[metrics]'."
)


def prometheus() -> ModuleType:
    """The ``prometheus_client`` module.

    Raises:
        ImproperlyConfigured: It is not installed (the ``[metrics]`` extra).
    """
    try:
        import prometheus_client  # noqa: PLC0415 - an optional dependency, needed only here
        import prometheus_client.core  # noqa: PLC0415
    except ImportError as exc:
        raise ImproperlyConfigured(MISSING_EXTRA) from exc
    return prometheus_client


class _ChannelStats:
    __slots__ = ("buckets", "seconds")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: above every bound


class ListenerMetrics(Observer):
    """Counts what a listener does and exposes it as Prometheus metrics.

    Pass it to ``Listener(observer=...)``, and serve it with :func:`serve`.

    Args:
        using: Alias of the outbox database, for the gauges.
        refresh_interval: Seconds during which the gauges' query result is reused.
    """

    timed = True

    def __init__(self, using: str, *, refresh_interval: float = REFRESH_INTERVAL) -> None:
        self._prometheus = prometheus()
        self.using = using
        self.refresh_interval = refresh_interval
        self.up = 0
        self.reconnects = 0
        self._channels: dict[str, _ChannelStats] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._gauges_lock = threading.Lock()
        self._gauges_at = -float("inf")
        self._queue_usage: float | None = None
        self._outbox: dict[str, tuple[int, int, float | None]] = {}

    def handled(
        self,
        channel: str,
        seconds: float,
        _bisect: Any = bisect.bisect_left,  # bound once: this runs for every event
        _bounds: tuple[float, ...] = BUCKETS,
        _first: float = BUCKETS[0],
    ) -> None:
        try:
            stats = self._channels[channel]
        except KeyError:
            stats = self._channels[channel] = _ChannelStats()
        stats.seconds += seconds
        # Most events take less than the first bound: no search for those.
        stats.buckets[0 if seconds <= _first else _bisect(_bounds, seconds)] += 1

    def handler_failed(self, channel: str, handler: Handler) -> None:
        key = (channel, handler_name(handler))
        self._errors[key] = self._errors.get(key, 0) + 1

    def connected(self, reconnected: bool) -> None:
        self.up = 1
        if reconnected:
            self.reconnects += 1

    def disconnected(self) -> None:
        self.up = 0

    def collect(self) -> Iterator[Any]:
        """The metric families, for ``prometheus_client`` (called on each scrape)."""
        core = self._prometheus.core
        dispatched = core.CounterMetricFamily(
            "pgpubsub_events_dispatched",
            "Events whose handlers ran, plain and durable.",
            labels=["channel"],
        )
        durations = core.HistogramMetricFamily(
            "pgpubsub_handler_duration_seconds",
            "Time an event spent in its channel's handlers.",
            labels=["channel"],
        )
        # sorted() copies in one C call: the listener's thread may add a channel.
        for channel, stats in sorted(self._channels.items()):
            buckets, cumulative = [], 0
            for bound, count in zip(BOUNDS, list(stats.buckets), strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            dispatched.add_metric([channel], cumulative)
            durations.add_metric([channel], buckets, stats.seconds)
        errors = core.CounterMetricFamily(
            "pgpubsub_handler_errors",
            "Handler calls that raised.",
            labels=["channel", "handler"],
        )
        for (channel, name), count in sorted(self._errors.items()):
            errors.add_metric([channel, name], count)
        yield dispatched
        yield errors
        yield durations
        yield core.CounterMetricFamily(
            "pgpubsub_reconnects", "Times the listener connected again.", value=self.reconnects
        )
        yield core.GaugeMetricFamily(
            "pgpubsub_listener_up", "1 while the listener is connected.", value=self.up
        )
        yield from self._gauges(core)

    def _gauges(self, core: Any) -> Iterator[Any]:
        with self._gauges_lock:
            if time.monotonic() - self._gauges_at >= self.refresh_interval:
                self._refresh()
            usage, outbox = self._queue_usage, dict(self._outbox)
        if usage is not None:
            yield core.GaugeMetricFamily(
                "pgpubsub_notification_queue_usage",
                "pg_notification_queue_usage(): how full the notification queue is (0 to 1).",
                value=usage,
            )
        pending = core.GaugeMetricFamily(
            "pgpubsub_durable_pending", "Durable events waiting.", labels=["channel"]
        )
        failed = core.GaugeMetricFamily(
            "pgpubsub_durable_failed",
            "Durable events that failed every attempt.",
            labels=["channel"],
        )
        oldest = 0.0
        for channel, (waiting, dead, age) in sorted(outbox.items()):
            pending.add_metric([channel], waiting)
            failed.add_metric([channel], dead)
            oldest = max(oldest, age or 0.0)
        yield pending
        yield failed
        yield core.GaugeMetricFamily(
            "pgpubsub_durable_oldest_pending_seconds",
            "Age of the oldest pending durable event (0 when none).",
            value=oldest,
        )

    def _refresh(self) -> None:
        """Run the gauges' query; keep the last values when the database fails."""
        connection = connections[self.using]  # this scrape thread's own connection
        try:
            with connection.cursor() as cursor:
                cursor.execute(GAUGES_SQL)
                rows = cursor.fetchall()
        except DatabaseError as exc:
            logger.warning("Cannot refresh the durable and queue gauges (%s).", exc)
            return
        finally:
            connection.close()  # each scrape runs in a new thread
        self._gauges_at = time.monotonic()
        self._queue_usage = float(rows[0][0])
        # Channels seen before and now empty report 0, not a gap.
        empty: tuple[int, int, float | None] = (0, 0, None)
        outbox = dict.fromkeys(self._outbox, empty)
        for _, channel, waiting, dead, age in rows:
            if channel is not None:
                outbox[channel] = (int(waiting), int(dead), None if age is None else float(age))
        self._outbox = outbox


class MetricsServer:
    """The HTTP server of :func:`serve`, in its daemon thread."""

    def __init__(self, server: Any) -> None:
        self._server = server

    @property
    def url(self) -> str:
        """``http://ADDRESS:PORT/metrics`` (the actual port, also when 0 was asked)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        """Stop serving, without waiting: the server notices within half a second.

        Waiting would delay the exit of ``listen_events --max-events`` by as much.
        """
        threading.Thread(target=self._stop, name="pgpubsub-metrics-stop", daemon=True).start()

    def _stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(metrics: ListenerMetrics, port: int, address: str = "0.0.0.0") -> MetricsServer:
    """Serve ``metrics`` on ``http://ADDRESS:PORT/metrics`` from a daemon thread.

    Only these metrics: a registry of its own, so nothing else in the process
    (nor ``PROMETHEUS_MULTIPROC_DIR``) changes what is served.
    """
    client = metrics._prometheus
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    server, _thread = client.start_http_server(port, addr=address, registry=registry)
    return MetricsServer(server)
