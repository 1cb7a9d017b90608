"""Leases of durable events: hung handlers, short transactions, sweeps under
traffic, a table that appears later; real PostgreSQL, listeners in threads."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import override_settings

from django_pgpubsub import DurableEvent, Event, Registry, notify
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ListenerThread, run_sql, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"DURABLE_POLL_INTERVAL": 0.2, "DURABLE_RETRY_DELAY": 0.2, "KEEPALIVE_INTERVAL": 1.0}


@override_settings(PGPUBSUB={**FAST, "DURABLE_LEASE": 1.0})
def test_a_handler_outliving_its_lease_loses_the_event_and_its_writes(
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    second_done = threading.Event()

    def slow_first_time(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        User.objects.create(username=f"attempt {event.attempt}")
        if event.attempt == 1:
            # Hung past the lease until another listener has taken the event over.
            assert second_done.wait(20)
        else:
            second_done.set()

    registry.register(slow_first_time, "jobs")
    with (
        caplog.at_level("WARNING", "django_pgpubsub"),
        ListenerThread(Listener(["jobs"], registry=registry)),
    ):
        notify("jobs", "x", durable=True)
        wait_until(lambda: OutboxEvent.objects.filter(attempts=1).exists(), 10, "attempt 1")
        with ListenerThread(Listener(["jobs"], registry=registry)):
            wait_until(second_done.is_set, 20, "another listener to take the event")
            wait_until(lambda: not OutboxEvent.objects.exists(), 20, "the completion")
            wait_until(lambda: "was claimed again while its" in caplog.text, 20, "the loss")
    assert list(User.objects.values_list("username", flat=True)) == ["attempt 2"]
    assert "held by a listener that is gone or past its DURABLE_LEASE" in caplog.text


@override_settings(PGPUBSUB={**FAST, "DURABLE_LEASE": 1.0})
def test_a_handler_that_ran_no_sql_and_outlived_its_lease_is_reported_lost(
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Handlers that run no SQL are completed in autocommit after their
    transaction; that completion still checks the claim."""
    second_done = threading.Event()
    attempts: list[int] = []

    def slow_first_time(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        attempts.append(event.attempt)
        if event.attempt == 1:
            assert second_done.wait(20)
        else:
            second_done.set()

    registry.register(slow_first_time, "jobs")
    with (
        caplog.at_level("WARNING", "django_pgpubsub"),
        ListenerThread(Listener(["jobs"], registry=registry)),
    ):
        notify("jobs", "x", durable=True)
        wait_until(lambda: attempts == [1], 10, "attempt 1")
        with ListenerThread(Listener(["jobs"], registry=registry)):
            wait_until(second_done.is_set, 20, "another listener to take the event")
            wait_until(lambda: not OutboxEvent.objects.exists(), 20, "the completion")
            wait_until(lambda: "was claimed again while its" in caplog.text, 20, "the loss")
    assert attempts == [1, 2]


def test_while_a_handler_runs_no_other_event_of_its_claim_is_locked(
    registry: Registry,
    test_database_url: str,
) -> None:
    checked = threading.Event()

    def sleep_on_the_first(event: Event) -> None:
        User.objects.create(username=f"user {event.payload}")
        if event.payload == "0":
            checked.wait(3)

    registry.register(sleep_on_the_first, "jobs")
    for i in range(5):
        notify("jobs", str(i), durable=True)
    with ListenerThread(Listener(["jobs"], registry=registry)):
        wait_until(lambda: OutboxEvent.objects.filter(state="running").count() == 5, 10, "a claim")
        first = OutboxEvent.objects.get(payload="0")
        [(xact_start, state)] = run_sql(
            test_database_url,
            "SELECT xact_start, state FROM pg_stat_activity WHERE pid = %s",
            (first.claimed_pid,),
        )
        assert first.started_at is not None
        assert state == "idle in transaction"  # the handler's transaction...
        assert xact_start > first.started_at  # ...began after its attempt was recorded
        outbox_locks = run_sql(
            test_database_url,
            "SELECT mode FROM pg_locks WHERE pid = %s "
            "AND relation = 'django_pgpubsub_outbox'::regclass",
            (first.claimed_pid,),
        )
        lockable = run_sql(
            test_database_url,
            "SELECT payload FROM django_pgpubsub_outbox FOR UPDATE SKIP LOCKED",
        )
        checked.set()
        wait_until(lambda: not OutboxEvent.objects.exists(), 10, "the claim to be handled")
    assert outbox_locks == []  # the handler's transaction has not touched the outbox
    assert User.objects.count() == 5
    assert sorted(payload for (payload,) in lockable) == ["0", "1", "2", "3", "4"]


@override_settings(PGPUBSUB={**FAST, "DURABLE_POLL_INTERVAL": 1.0, "DURABLE_RETRY_DELAY": 0.5})
def test_a_retry_comes_due_under_steady_plain_traffic(registry: Registry) -> None:
    attempts: list[float] = []

    def fail_once(event: Event) -> None:
        if isinstance(event, DurableEvent):
            attempts.append(time.monotonic())
            if event.attempt == 1:
                raise RuntimeError("first attempt fails")

    registry.register(fail_once, "jobs")
    stop = threading.Event()

    def traffic() -> None:
        from django.db import connection

        try:
            while not stop.wait(0.2):
                notify("jobs", "plain")
        finally:
            connection.close()

    sender = threading.Thread(target=traffic)
    with ListenerThread(Listener(["jobs"], registry=registry)):
        sender.start()
        try:
            time.sleep(0.5)  # plain traffic is flowing before the event is sent
            notify("jobs", "durable", durable=True)
            wait_until(lambda: len(attempts) == 2, 15, "the retry")
        finally:
            stop.set()
            sender.join(10)
    # The bound the README promises: DURABLE_POLL_INTERVAL + retry delay + 2 s.
    assert attempts[1] - attempts[0] < 1.0 + 0.5 + 2.0
    assert not OutboxEvent.objects.exists()


@override_settings(PGPUBSUB=FAST)
def test_a_listener_started_before_migrate_handles_events_after_it(
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Any] = []
    registry.register(lambda event: seen.append(event.payload), "jobs")
    call_command("migrate", "django_pgpubsub", "zero", verbosity=0)
    try:
        with (
            caplog.at_level("WARNING", "django_pgpubsub"),
            ListenerThread(Listener(["jobs"], registry=registry)),
        ):
            wait_until(lambda: "No outbox table on 'default'" in caplog.text, 10, "the warning")
            call_command("migrate", "django_pgpubsub", verbosity=0)
            notify("jobs", "after migrate", durable=True)
            wait_until(lambda: len(seen) == 1, 10, "no restart")
    finally:
        call_command("migrate", verbosity=0)  # with whatever depends on the app
    assert seen == ["after migrate"]
    assert "The outbox table on 'default' is ready now." in caplog.text
