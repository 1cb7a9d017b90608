"""Durable wake-ups: one NOTIFY per channel and transaction, or none at all in
"poll" mode; real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.db import connection, transaction
from django.test import override_settings

from django_pgpubsub import PubSub, Registry, notify, notify_many
from django_pgpubsub.db.sql import DUE_SQL, WAKEUP_CHANNEL
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ListenerThread, ManagePy, collect, nothing_arrives, wait_until
from tests.testapp.models import Received

pytestmark = pytest.mark.django_db(transaction=True)

POLL = {
    "DURABLE_WAKEUP": "poll",
    "DURABLE_PROBE_INTERVAL": 0.3,
    "DURABLE_POLL_INTERVAL": 60.0,  # so only the probe can find the event
    "KEEPALIVE_INTERVAL": 60.0,
}


def test_a_thousand_durable_events_of_one_transaction_wake_listeners_once(
    pubsub: PubSub,
) -> None:
    pubsub.listen(WAKEUP_CHANNEL)
    with transaction.atomic():
        for i in range(1000):
            notify("jobs", i, durable=True)
    assert [e.payload for e in collect(pubsub, 1)] == ["jobs"]
    assert nothing_arrives(pubsub, 0.5)
    with transaction.atomic():
        notify_many([("jobs", i) for i in range(1000)], durable=True)
        notify_many([("mail", i) for i in range(1000)], durable=True)
    assert sorted(e.payload for e in collect(pubsub, 2)) == ["jobs", "mail"]
    assert nothing_arrives(pubsub, 0.5)
    assert OutboxEvent.objects.count() == 3000


@override_settings(PGPUBSUB=POLL)
def test_in_poll_mode_writers_send_no_notify_and_the_probe_finds_the_event(
    registry: Registry,
    pubsub: PubSub,
) -> None:
    handled: list[float] = []
    registry.register(lambda event: handled.append(time.monotonic()), "jobs")
    pubsub.listen(WAKEUP_CHANNEL)
    with ListenerThread(Listener(["jobs"], registry=registry)).wait_connected():
        time.sleep(0.5)  # past the start-up sweep: only the probe is left
        sent = time.monotonic()
        assert notify("jobs", "one", durable=True) is True
        wait_until(lambda: len(handled) == 1, 10, "the probe to find the event")
        assert handled[0] - sent < 0.3 + 1.0  # DURABLE_PROBE_INTERVAL + 1 s
        assert notify_many([("jobs", "two"), ("jobs", "three")], durable=True) == 2
        wait_until(lambda: len(handled) == 3, 10, "the next two")
    assert nothing_arrives(pubsub, 0.3)  # no wake-up was ever sent
    assert not OutboxEvent.objects.exists()


def test_the_probe_reads_only_the_heads_index() -> None:
    notify_many([("jobs", i) for i in range(100)], durable=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE django_pgpubsub_outbox")
    # SET LOCAL: a transaction pooler keeps only a transaction on one server session.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # what the planner picks on a big table
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + DUE_SQL, (["jobs", "mail"],))
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Only Scan using pgpubsub_outbox_heads" in plan, plan


@pytest.mark.slow
@pytest.mark.scale
def test_three_poll_mode_processes_share_twenty_thousand_events_each_handled_once(
    test_database_url: str,
) -> None:
    processes: list[ManagePy] = []
    start: Callable[[], ManagePy] = lambda: ManagePy(  # noqa: E731
        "listen_events", "--channel", "test.durable", url=test_database_url,
        settings="tests.settings_poll",
    )  # fmt: skip
    try:
        for _ in range(3):
            processes.append(start())
        for process in processes:
            process.wait_for_output("Listening on")
        with override_settings(PGPUBSUB=POLL), transaction.atomic():
            notify_many((("test.durable", str(i)) for i in range(20_000)), durable=True)
        wait_until(lambda: Received.objects.count() >= 20_000, 300, "20,000 handled events")
        wait_until(lambda: not OutboxEvent.objects.exists(), 30, "an empty outbox")
    finally:
        for process in processes:
            process.kill()
    payloads = list(Received.objects.values_list("payload", flat=True))
    assert sorted(map(int, payloads)) == list(range(20_000))
    handled_by = set(Received.objects.values_list("pid", flat=True))
    assert handled_by <= {p.process.pid for p in processes}
    assert len(handled_by) >= 2, "the work was not shared"
