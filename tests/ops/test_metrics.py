"""listen_events --metrics-port: Prometheus metrics after known traffic."""

from __future__ import annotations

import re
import sys
import urllib.request
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from django_pgpubsub import Event, Registry, notify
from django_pgpubsub.db.sql import OUTBOX_TABLE
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.ops.metrics import GAUGES_SQL, ListenerMetrics, serve
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
    name = "tests.ops.test_metrics.test_in_process_counts_events_errors_durations_and_connections"
    key = f'pgpubsub_handler_errors_total{{channel="m.fail",handler="{name}.<locals>.fail"}}'
    assert samples[key] == 1
    assert samples['pgpubsub_handler_duration_seconds_count{channel="m.ok"}'] == 2
    assert samples['pgpubsub_handler_duration_seconds_bucket{channel="m.ok",le="+Inf"}'] == 2
    assert 0 < samples['pgpubsub_handler_duration_seconds_sum{channel="m.ok"}'] < 10
    assert samples["pgpubsub_reconnects_total"] == 0
    assert samples["pgpubsub_listener_up"] == 0  # run() returned: closed
    assert samples["pgpubsub_notification_queue_usage"] == 0
    assert samples["pgpubsub_durable_oldest_pending_seconds"] == 0


def test_gauges_cover_the_listeners_channels_and_drop_the_emptied_ones() -> None:
    metrics = ListenerMetrics("default", channels=["g.one", "g.two", "g.idle"], refresh_interval=0)
    notify("g.one", "1", durable=True)
    notify("g.one", "2", durable=True)
    notify("g.two", "3", durable=True)
    for user in range(50):  # per-user channels of other listeners: no series here
        notify(f"user.{user}", "x", durable=True)
    OutboxEvent.objects.filter(channel="g.two").update(state=OutboxEvent.State.FAILED)
    samples = collect(metrics)
    durable = {name: value for name, value in samples.items() if "durable_pending{" in name}
    assert durable == {
        'pgpubsub_durable_pending{channel="g.one"}': 2,
        'pgpubsub_durable_pending{channel="g.two"}': 0,
    }
    assert samples['pgpubsub_durable_failed{channel="g.one"}'] == 0
    assert samples['pgpubsub_durable_failed{channel="g.two"}'] == 1
    assert samples["pgpubsub_durable_oldest_pending_seconds"] >= 0
    OutboxEvent.objects.filter(channel__startswith="g.").delete()
    samples = collect(metrics)
    assert not [name for name in samples if "{channel=" in name and "durable" in name]
    assert samples["pgpubsub_durable_oldest_pending_seconds"] == 0  # none pending
    assert ListenerMetrics("default").refresh_interval == 5  # "at most every 5 seconds"
    cached = ListenerMetrics("default", channels=["g.one"], refresh_interval=3600)
    collect(cached)
    notify("g.one", "4", durable=True)
    assert 'pgpubsub_durable_pending{channel="g.one"}' not in collect(cached)  # not refreshed


@pytest.fixture
def big_outbox() -> None:
    """A backlog of 20,000 events on 100 channels, a few failed and running,
    analyzed: the shape where a scan of the table would cost."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {OUTBOX_TABLE} (channel, payload, sender_pid, state, attempts,
                                        created_at, available_at, last_error)
            SELECT 'c.' || (i % 100),
                   'x', 0,
                   CASE WHEN i % 500 = 0 THEN 'failed' WHEN i % 700 = 0 THEN 'running'
                        ELSE 'pending' END,
                   0, now(), now(), ''
            FROM generate_series(1, 20000) AS i
            """
        )
        cursor.execute(f"ANALYZE {OUTBOX_TABLE}")


def test_the_gauges_query_reads_the_outbox_through_its_partial_indexes(big_outbox: None) -> None:
    """Index probes per channel, never a scan of the outbox (seq scans off, so
    the planner takes an index wherever one can answer)."""
    plan = explain(GAUGES_SQL, (["c.1", "c.2"],))
    assert outbox_scans(plan) <= {"pgpubsub_outbox_pending", "pgpubsub_outbox_failed"}
    assert outbox_scans(plan)


def explain(sql: str, params: tuple[object, ...] = ()) -> dict[str, object]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        [[plan]] = cursor.fetchone()
    return plan["Plan"]  # type: ignore[no-any-return]


def outbox_scans(node: dict[str, object]) -> set[str]:
    """The index (or the kind of scan) of every scan of the outbox in a plan."""
    found = set()
    children: list[dict[str, object]] = node.get("Plans", [])  # type: ignore[assignment]
    if node.get("Relation Name") == OUTBOX_TABLE:
        if node["Node Type"] == "Bitmap Heap Scan":  # its index is in its children
            return {str(child["Index Name"]) for child in _bitmap_indexes(children)}
        found.add(str(node.get("Index Name", node["Node Type"])))
    for child in children:
        found |= outbox_scans(child)
    return found


def _bitmap_indexes(nodes: list[dict[str, object]]) -> list[dict[str, object]]:
    found = []
    for node in nodes:
        if "Index Name" in node:
            found.append(node)
        found += _bitmap_indexes(node.get("Plans", []))  # type: ignore[arg-type]
    return found


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
    )
    match = re.search(r"Serving metrics on (http://127\.0\.0\.1:\d+/metrics)", process.output())
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
    dead = OutboxEvent.objects.create(
        channel="test.durable",
        payload="kept failed",
        sender_pid=0,
        state=OutboxEvent.State.FAILED,
        created_at=timezone.now(),
        available_at=timezone.now(),
    )
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
        'pgpubsub_durable_failed{channel="test.durable"}': 1,
        'pgpubsub_durable_pending{channel="test.durable"}': 0,
        "pgpubsub_notification_queue_usage": 0,
    }
    latest: list[Samples] = []

    def settled() -> bool:
        latest[:] = [scrape()]
        return all(latest[0].get(name) == value for name, value in expected.items())

    # The gauges are refreshed at most every 5 s: wait for a fresh scrape.
    wait_until(settled, 15, "the expected metrics")
    assert latest[0]["pgpubsub_durable_oldest_pending_seconds"] >= 0
    # Only its own channels: the others' backlog is theirs (and pubsub_health's).
    assert not [name for name in latest[0] if "nobody" in name]
    dead.delete()
    wait_until(
        lambda: 'pgpubsub_durable_failed{channel="test.durable"}' not in scrape(),
        15,
        "the series of an emptied channel to go",
    )


def test_metrics_bind_the_loopback_interface_unless_told_otherwise() -> None:
    from django_pgpubsub.management.commands.listen_events import Command

    parser = Command().create_parser("manage.py", "listen_events")
    assert parser.parse_args(["--metrics-port", "0"]).metrics_address == "127.0.0.1"
    chosen = parser.parse_args(["--metrics-port", "0", "--metrics-addr", "0.0.0.0"])
    assert chosen.metrics_address == "0.0.0.0"
    # The longer spelling docs/handlers.rst names beside it: the same option.
    chosen = parser.parse_args(["--metrics-port", "0", "--metrics-address", "::1"])
    assert chosen.metrics_address == "::1"
    server = serve(ListenerMetrics("default"), 0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
    finally:
        server.close()


@pytest.mark.slow
def test_metrics_addr_changes_the_address(listen_events: Callable[..., ManagePy]) -> None:
    process = listen_events(
        "--channel", "test.a", "--metrics-port", "0", "--metrics-addr", "0.0.0.0"
    )
    match = re.search(r"Serving metrics on http://0\.0\.0\.0:(\d+)/metrics", process.output())
    assert match, process.output()
    with urllib.request.urlopen(f"http://127.0.0.1:{match[1]}/metrics", timeout=10) as response:
        assert "pgpubsub_listener_up" in response.read().decode()


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
    metrics = ListenerMetrics("default", channels=["k.one"], refresh_interval=0)
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
    assert samples["pgpubsub_gauge_refresh_failures_total"] == 1
