"""Prometheus metrics of a listener (``listen_events --metrics-port``) and
their HTTP server; needs the ``[metrics]`` extra.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from django_pgpubsub import conf
from django_pgpubsub.db.connection import database_wrapper
from django_pgpubsub.db.sql import BLOCKED_KEYS_SQL, OUTBOX_TABLE
from django_pgpubsub.ops.reads import BoundedReader, run_bounded, validate_timeout
from django_pgpubsub.vocabulary.handlers import Handler, handler_name
from django_pgpubsub.vocabulary.observer import Observer

#: Where the metrics server listens unless told otherwise: this host only.
DEFAULT_ADDRESS = "127.0.0.1"

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


def serve(metrics: Any, port: int, address: str = DEFAULT_ADDRESS) -> MetricsServer:
    """Serve ``metrics`` (a collector: a ``ListenerMetrics``) on
    ``http://ADDRESS:PORT/metrics`` from a daemon thread.

    Only these metrics: a registry of its own, so nothing else in the process
    (nor ``PROMETHEUS_MULTIPROC_DIR``) changes what is served. On the loopback
    interface unless ``address`` says otherwise: the metrics name channels
    and handlers, which are nobody else's business.
    """
    client = prometheus()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    server, _thread = client.start_http_server(port, addr=address, registry=registry)
    return MetricsServer(server)


logger = logging.getLogger("django_pgpubsub.metrics")

# Seconds, for pgpubsub_handler_duration_seconds: from a cache delete to a slow
# HTTP call.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BOUNDS = (*(str(bound) for bound in BUCKETS), "+Inf")  # the "le" labels
REFRESH_INTERVAL = 5.0

REFRESH_TIMEOUT = 5.0  # under Prometheus' default scrape_timeout of 10 s

QUEUE_SQL = "SELECT pg_notification_queue_usage()"

# The listener's channels only, each read through the outbox's partial
# indexes (pending: channel, id; failed: channel): index probes per channel,
# never a scan of the table. Channels without rows give no row, so their
# series disappear.
GAUGES_SQL = f"""
SELECT c.channel, p.pending, f.failed, extract(epoch FROM now() - first.created_at)
FROM unnest(%s::text[]) AS c(channel)
CROSS JOIN LATERAL (
    SELECT count(*) FROM {OUTBOX_TABLE} o WHERE o.state = 'pending' AND o.channel = c.channel
) AS p(pending)
CROSS JOIN LATERAL (
    SELECT count(*) FROM {OUTBOX_TABLE} o WHERE o.state = 'failed' AND o.channel = c.channel
) AS f(failed)
LEFT JOIN LATERAL (
    SELECT o.created_at FROM {OUTBOX_TABLE} o
    WHERE o.state = 'pending' AND o.channel = c.channel ORDER BY o.id LIMIT 1
) AS first ON true
WHERE p.pending > 0 OR f.failed > 0
"""


class _ChannelStats:
    __slots__ = ("buckets", "seconds")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: above every bound


class ListenerMetrics(Observer):
    """Counts what a listener does and exposes it as Prometheus metrics.

    Pass it to ``Listener(observer=...)``, and serve it with :func:`serve`.

    The durable gauges cover ``channels`` only (set it to the listener's
    channels: ``listen_events`` does), one series per channel that has
    pending or failed events. Their query runs on a scrape at most every
    ``refresh_interval`` seconds, bounded by ``refresh_timeout``; a scrape
    never waits for another's refresh, and one that fails or times out
    serves the last values (and counts ``pgpubsub_gauge_refresh_failures``).

    Args:
        using: Alias of the outbox database, for the gauges.
        channels: The channels of the per-channel durable gauges.
        refresh_interval: Seconds during which the gauges' query result is reused.
        refresh_timeout: Seconds a refresh may take (connecting, the queries,
            waiting for a lock).

    Raises:
        ImproperlyConfigured: ``prometheus_client`` is not installed, or
            ``using`` is not a PostgreSQL alias.
    """

    timed = True

    def __init__(
        self,
        using: str,
        *,
        channels: Iterable[str] = (),
        refresh_interval: float = REFRESH_INTERVAL,
        refresh_timeout: float = REFRESH_TIMEOUT,
    ) -> None:
        self._prometheus = prometheus()
        database_wrapper(using)
        self.using = using
        self.channels = frozenset(channels)
        self.refresh_interval = refresh_interval
        self.refresh_timeout = validate_timeout(refresh_timeout)
        self.refresh_failures = 0
        self.up = 0
        self.reconnects = 0
        self._channels: dict[str, _ChannelStats] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._refresh_lock = threading.Lock()  # held only to start or end a refresh
        self._refreshing = False
        self._gauges_at = -float("inf")
        # (queue usage, {channel: (pending, failed, age of the oldest pending)}),
        # replaced as a whole, so a scrape reads one refresh's values.
        self._gauges_values: tuple[float | None, dict[str, tuple[int, int, float | None]]] = (
            None,
            {},
        )
        self._blocked: tuple[int, float] = (0, 0.0)  # blocked ordering keys, oldest age

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
        self._refresh()
        usage, outbox = self._gauges_values
        blocked, blocked_age = self._blocked
        yield core.CounterMetricFamily(
            "pgpubsub_gauge_refresh_failures",
            "Refreshes of the queue and durable gauges that failed or timed out "
            "(the gauges then keep their last values).",
            value=self.refresh_failures,
        )
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
        yield core.GaugeMetricFamily(
            "pgpubsub_durable_blocked_keys",
            "Ordering keys whose later events wait behind a failed attempt.",
            value=blocked,
        )
        yield core.GaugeMetricFamily(
            "pgpubsub_durable_oldest_blocked_seconds",
            "Age of the oldest durable event waiting behind a failed attempt of its "
            "ordering key (0 when none).",
            value=blocked_age,
        )

    def _refresh(self) -> None:
        """Refresh the gauges if they are due and no other scrape is at it;
        wait for it at most ``refresh_timeout`` seconds (and a moment)."""
        with self._refresh_lock:
            if self._refreshing or time.monotonic() - self._gauges_at < self.refresh_interval:
                return
            self._refreshing = True
        try:
            run_bounded(self.using, self.refresh_timeout, self._read, name="pgpubsub-gauges")
        except DatabaseError as exc:
            # The thread ends _refreshing when it ends, however it ends.
            self.refresh_failures += 1
            logger.warning(
                "Cannot refresh the durable and queue gauges (%s); serving the last values.",
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
        except BaseException:
            with self._refresh_lock:
                self._refreshing = False  # it failed before its thread started reading
            raise

    def _read(self, reader: BoundedReader) -> None:
        """The refresh, in its thread: one query for the queue, one for the outbox."""
        try:
            reader.connect()
            [(usage,)] = reader.fetch(QUEUE_SQL)
            rows = reader.fetch(GAUGES_SQL, (sorted(self.channels),)) if self.channels else []
            outbox = {
                channel: (int(waiting), int(dead), None if age is None else float(age))
                for channel, waiting, dead, age in rows
            }
            [(blocked, age)] = reader.fetch(
                BLOCKED_KEYS_SQL, {"blockers": conf.ordering_blocker_states()}
            )
            self._blocked = (int(blocked), float(age or 0.0))
            self._gauges_values = (float(usage), outbox)
        finally:
            with self._refresh_lock:
                # Also after a failure: the next try waits for the next interval,
                # so a sick database slows down one scrape per interval at most.
                self._gauges_at = time.monotonic()
                self._refreshing = False


__all__ = ["ListenerMetrics", "MetricsServer", "prometheus", "serve"]
