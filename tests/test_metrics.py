"""listen_events --metrics-port: Prometheus metrics after known traffic."""

from __future__ import annotations

import re
import sys
import urllib.request
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from django_pgpubsub import Event, Registry, notify
from django_pgpubsub.listener import Listener
from django_pgpubsub.metrics import ListenerMetrics, serve
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ManagePy, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

Samples = dict[str, float]


def parse(text: str) -> Samples:
    """``{'name{label="value",...}': value}`` of every sample."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def collect(metrics: ListenerMetrics) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return parse(generate_latest(registry).decode())


def test_without_prometheus_client_the_flag_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(CommandError, match=r"pip install 'django-pg-pubsub\[metrics\]'"):
        call_command("listen_events", "--metrics-port", "0")


def test_in_process_counts_events_errors_durations_and_connections() -> None:
    def fail(event: Event) -> None:
        raise RuntimeError("boom")

    handlers = Registry()
    handlers.register(lambda event: None, "m.ok")
    handlers.register(fail, "m.fail")
    metrics = ListenerMetrics("default", refresh_interval=0)
    notify("m.ok", "durable", durable=True)  # handled at start

    def send(listener: Listener, reconnected: bool) -> None:
        notify("m.ok", "1")
        notify("m.fail", "2")

    listener = Listener(registry=handlers, max_events=3, on_connect=send, observer=metrics)
    assert listener.run() == 3
    samples = collect(metrics)
    assert samples['pgpubsub_events_dispatched_total{channel="m.ok"}'] == 2
    assert samples['pgpubsub_events_dispatched_total{channel="m.fail"}'] == 1
    name = "tests.test_metrics.test_in_process_counts_events_errors_durations_and_connections"
    key = f'pgpubsub_handler_errors_total{{channel="m.fail",handler="{name}.<locals>.fail"}}'
    assert samples[key] == 1
    assert samples['pgpubsub_handler_duration_seconds_count{channel="m.ok"}'] == 2
    assert samples['pgpubsub_handler_duration_seconds_bucket{channel="m.ok",le="+Inf"}'] == 2
    assert 0 < samples['pgpubsub_handler_duration_seconds_sum{channel="m.ok"}'] < 10
    assert samples["pgpubsub_reconnects_total"] == 0
    assert samples["pgpubsub_listener_up"] == 0  # run() returned: closed
    assert samples["pgpubsub_notification_queue_usage"] == 0
    assert samples["pgpubsub_durable_oldest_pending_seconds"] == 0


def test_gauges_come_from_one_query_and_keep_channels_that_emptied() -> None:
    metrics = ListenerMetrics("default", refresh_interval=0)
    notify("g.one", "1", durable=True)
    notify("g.one", "2", durable=True)
    notify("g.two", "3", durable=True)
    OutboxEvent.objects.filter(channel="g.two").update(state=OutboxEvent.State.FAILED)
    samples = collect(metrics)
    assert samples['pgpubsub_durable_pending{channel="g.one"}'] == 2
    assert samples['pgpubsub_durable_failed{channel="g.one"}'] == 0
    assert samples['pgpubsub_durable_pending{channel="g.two"}'] == 0
    assert samples['pgpubsub_durable_failed{channel="g.two"}'] == 1
    assert samples["pgpubsub_durable_oldest_pending_seconds"] >= 0
    OutboxEvent.objects.all().delete()
    samples = collect(metrics)
    assert samples['pgpubsub_durable_pending{channel="g.one"}'] == 0
    assert samples['pgpubsub_durable_failed{channel="g.two"}'] == 0
    assert samples["pgpubsub_durable_oldest_pending_seconds"] == 0  # none pending
    assert ListenerMetrics("default").refresh_interval == 5  # "at most every 5 seconds"
    cached = ListenerMetrics("default", refresh_interval=3600)
    collect(cached)
    notify("g.one", "4", durable=True)
    assert 'pgpubsub_durable_pending{channel="g.one"}' not in collect(cached)  # not refreshed


def test_serve_and_close() -> None:
    server = serve(ListenerMetrics("default"), 0, "127.0.0.1")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", server.url)
    with urllib.request.urlopen(server.url, timeout=10) as response:
        assert "pgpubsub_listener_up 0.0" in response.read().decode()
    server.close()

    def refused() -> bool:
        try:
            urllib.request.urlopen(server.url, timeout=1).close()
        except OSError:
            return True
        return False

    wait_until(refused, 5, "the server to stop")


@pytest.mark.slow
def test_scrape_a_running_listen_events(listen_events: Callable[..., ManagePy]) -> None:
    process = listen_events(
        "--channel",
        "test.a",
        "--channel",
        "test.fail",
        "--channel",
        "test.durable",
        "--metrics-port",
        "0",
        "--metrics-address",
        "127.0.0.1",
    )
    match = re.search(r"Serving metrics on (http://\S+)", process.output())
    assert match, process.output()
    url = match[1]

    def scrape() -> Samples:
        with urllib.request.urlopen(url, timeout=10) as response:
            return parse(response.read().decode())

    assert scrape()["pgpubsub_listener_up"] == 1
    notify("test.a", "1")
    notify("test.a", "2")
    notify("test.fail", "boom")
    notify("test.durable", "handled", durable=True)
    for payload in ("a", "b", "c"):  # a backlog: no listener handles that channel
        notify("nobody.durable", payload, durable=True)
    notify("nobody.dead", "d", durable=True)
    OutboxEvent.objects.filter(channel="nobody.dead").update(state=OutboxEvent.State.FAILED)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'django_pgpubsub listener'"
        )
    wait_until(lambda: "again after" in process.output(), 10, "the reconnect")

    expected = {
        'pgpubsub_events_dispatched_total{channel="test.a"}': 2,
        'pgpubsub_events_dispatched_total{channel="test.fail"}': 1,
        'pgpubsub_events_dispatched_total{channel="test.durable"}': 1,
        "pgpubsub_handler_errors_total"
        '{channel="test.fail",handler="tests.testapp.pubsub.fails_on_boom"}': 1,
        'pgpubsub_handler_duration_seconds_count{channel="test.a"}': 2,
        "pgpubsub_reconnects_total": 1,
        "pgpubsub_listener_up": 1,
        'pgpubsub_durable_pending{channel="nobody.durable"}': 3,
        'pgpubsub_durable_failed{channel="nobody.dead"}': 1,
        'pgpubsub_durable_pending{channel="nobody.dead"}': 0,
        "pgpubsub_notification_queue_usage": 0,
    }
    latest: list[Samples] = []

    def settled() -> bool:
        latest[:] = [scrape()]
        return all(latest[0].get(name) == value for name, value in expected.items())

    # The gauges are refreshed at most every 5 s: wait for a fresh scrape.
    wait_until(settled, 15, "the expected metrics")
    assert latest[0]["pgpubsub_durable_oldest_pending_seconds"] >= 0
    assert 'pgpubsub_durable_pending{channel="test.durable"}' not in latest[0]


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    metrics = ListenerMetrics("default")
    for seconds in (0.0001, 0.0005, 0.003, 20.0):
        metrics.handled("h", seconds)
    samples = collect(metrics)

    def bucket(le: str) -> float:
        return samples[f'pgpubsub_handler_duration_seconds_bucket{{channel="h",le="{le}"}}']

    assert bucket("0.0005") == 2  # "le": a duration equal to the bound is in it
    assert bucket("0.0025") == 2
    assert bucket("0.005") == 3
    assert bucket("10.0") == 3
    assert bucket("+Inf") == 4
    assert samples['pgpubsub_handler_duration_seconds_sum{channel="h"}'] == pytest.approx(20.0036)
    assert samples['pgpubsub_events_dispatched_total{channel="h"}'] == 4


def test_gauges_keep_their_last_values_when_the_query_fails() -> None:
    metrics = ListenerMetrics("default", refresh_interval=0)
    notify("k.one", "1", durable=True)
    assert collect(metrics)['pgpubsub_durable_pending{channel="k.one"}'] == 1
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE django_pgpubsub_outbox RENAME TO outbox_away")
    try:
        samples = collect(metrics)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE outbox_away RENAME TO django_pgpubsub_outbox")
    assert samples['pgpubsub_durable_pending{channel="k.one"}'] == 1
    assert samples["pgpubsub_notification_queue_usage"] == 0
