"""Durable delivery v2: attempts counted before handlers run, one transaction per
event, leases, recovery of dead and hung claims; real PostgreSQL, in-process."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import override_settings

from django_pgpubsub import DurableEvent, Event, Registry, conf, notify
from django_pgpubsub.db.claim_sql import CLAIM_SQL
from django_pgpubsub.db.reconnect import MAX_DELAY, backoff
from django_pgpubsub.durable.claim import Claimed, retry_delay, sanitize
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from tests.helpers import run_sql, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def claim_elsewhere(url: str, channel: str, limit: int) -> list[Claimed]:
    """Claim events as a listener would, on a connection that then ends (a dead
    listener: the advisory lock of its holder key went with its session);
    return once its backend is gone."""
    params = {
        "channels": [channel],
        "limit": limit,
        "token": str(uuid.uuid4()),
        "lease": 60.0,
        "holder": random.getrandbits(63),
        "blocking": ["pending", "running"],
        "only": None,
    }
    rows = [Claimed(*row) for row in run_sql(url, CLAIM_SQL, params)]  # type: ignore[arg-type]
    [pid] = set(OutboxEvent.objects.filter(state="running").values_list("claimed_pid", flat=True))
    wait_until(
        lambda: not run_sql(url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
        10,
        "the claiming session to end",
    )
    return rows


@pytest.fixture
def seen() -> list[tuple[str, int]]:
    return []


@pytest.fixture
def jobs(seen: list[tuple[str, int]]) -> Registry:
    registry = Registry()

    def remember(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        seen.append((event.payload, event.attempt))
        User.objects.create(username=f"user-{event.id}-{event.attempt}")

    registry.register(remember, "jobs")
    return registry


def test_every_attempt_is_recorded_before_its_handlers_run(
    registry: Registry, test_database_url: str
) -> None:
    recorded: list[tuple[Any, ...]] = []

    def look_from_outside(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        recorded.extend(
            run_sql(
                test_database_url,
                "SELECT state, attempts, started_at IS NOT NULL FROM django_pgpubsub_outbox "
                "WHERE id = %s",
                (event.id,),
            )
        )

    registry.register(look_from_outside, "jobs")
    for payload in "abc":
        notify("jobs", payload, durable=True)
    Listener(["jobs"], registry=registry, max_events=3).run()
    # Committed, so seen by another session, while the handlers ran.
    assert recorded == [("running", 1, True)] * 3
    assert not OutboxEvent.objects.exists()


def test_a_dead_listeners_claim_comes_back_counting_only_the_started_event(
    jobs: Registry, seen: list[tuple[str, int]], test_database_url: str
) -> None:
    for payload in ("first", "second", "third"):
        notify("jobs", payload, durable=True)
    claimed = claim_elsewhere(test_database_url, "jobs", 3)  # its session has ended since
    assert sorted(row.attempts for row in claimed) == [0, 0, 1]  # the first one started
    Listener(["jobs"], registry=jobs, max_events=3).run()
    assert sorted(seen) == [("first", 2), ("second", 1), ("third", 1)]
    assert not OutboxEvent.objects.exists()


@override_settings(PGPUBSUB={"DURABLE_MAX_ATTEMPTS": 2, "DURABLE_POLL_INTERVAL": 0.2})
def test_a_started_last_attempt_of_a_dead_listener_ends_failed(
    jobs: Registry, seen: list[tuple[str, int]], test_database_url: str
) -> None:
    notify("jobs", "poison", durable=True)
    OutboxEvent.objects.update(attempts=1)
    claim_elsewhere(test_database_url, "jobs", 1)  # attempt 2 of 2 starts; its listener dies
    notify("jobs", "after", durable=True)
    Listener(["jobs"], registry=jobs, max_events=1).run()
    assert seen == [("after", 1)]
    poison = OutboxEvent.objects.get()
    assert (poison.payload, poison.state, poison.attempts) == ("poison", "failed", 2)
    assert "Attempt 2 did not finish" in poison.last_error
    assert "disconnected or died" in poison.last_error
    assert poison.claimed_pid is None


def test_channels_without_handlers_are_never_claimed(jobs: Registry) -> None:
    notify("parked", "nobody handles me", durable=True)
    notify("jobs", "x", durable=True)
    Listener(["parked", "jobs"], registry=jobs, max_events=1).run()
    parked = OutboxEvent.objects.get()
    assert (parked.channel, parked.state, parked.attempts) == ("parked", "pending", 0)


@pytest.fixture
def failing() -> Registry:
    registry = Registry()

    def raise_nul_and_surrogate(event: Event) -> None:
        raise RuntimeError(f"bad {event.payload}: \x00 and \ud800")

    def close_the_connection(event: Event) -> None:
        User.objects.create(username="rolled back")
        connection.close()

    def raise_on_commit(event: Event) -> None:
        User.objects.create(username=f"committed {event.payload}")
        transaction.on_commit(lambda: 1 / 0)

    registry.register(raise_nul_and_surrogate, "nul")
    registry.register(close_the_connection, "closes")
    registry.register(raise_on_commit, "on_commit")
    return registry


def test_errors_with_nul_bytes_and_lone_surrogates_are_stored(failing: Registry) -> None:
    notify("nul", "p", durable=True)
    notify("on_commit", "after", durable=True)  # handled: the listener stayed up
    Listener(["nul", "on_commit"], registry=failing, max_events=2).run()
    row = OutboxEvent.objects.get()
    assert (row.channel, row.state, row.attempts) == ("nul", "pending", 1)
    assert "RuntimeError: bad p: \\x00 and \\ud800" in row.last_error
    assert User.objects.filter(username="committed after").exists()


def test_sanitize_keeps_ordinary_text_and_escapes_the_rest() -> None:
    assert sanitize("é ✓ plain") == "é ✓ plain"
    assert sanitize("a\x00b\udc80c") == "a\\x00b\\udc80c"


def test_a_raising_on_commit_callback_does_not_stop_the_listener(
    failing: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    for payload in ("1", "2"):
        notify("on_commit", payload, durable=True)
    with caplog.at_level("ERROR", "django_pgpubsub"):
        assert Listener(["on_commit"], registry=failing, max_events=2).run() == 2
    assert not OutboxEvent.objects.exists()  # both committed: handled
    assert set(User.objects.values_list("username", flat=True)) == {"committed 1", "committed 2"}
    assert caplog.text.count("An on_commit callback of durable event") == 2


def test_a_handler_closing_the_connection_uses_one_attempt(failing: Registry) -> None:
    notify("closes", "x", durable=True)
    notify("on_commit", "after", durable=True)
    Listener(["closes", "on_commit"], registry=failing, max_events=2).run()
    row = OutboxEvent.objects.get()
    assert (row.channel, row.state, row.attempts, row.claimed_pid) == ("closes", "pending", 1, None)
    assert not User.objects.filter(username="rolled back").exists()
    assert User.objects.filter(username="committed after").exists()


def test_backoff_never_overflows() -> None:
    assert backoff(0.25, 30.0, 1) == 0.25
    assert backoff(0.25, 30.0, 3) == 1.0
    assert backoff(0.25, 30.0, 10**9) == 30.0
    assert backoff(1.0, float("inf"), 10**9) == MAX_DELAY
    with override_settings(PGPUBSUB={"DURABLE_RETRY_MAX_DELAY": 1e300}):
        assert retry_delay(10**6) == MAX_DELAY


@override_settings(PGPUBSUB={"DURABLE_MAX_ATTEMPTS": 10**9, "DURABLE_RETRY_MAX_DELAY": 1e300})
def test_a_failure_after_many_attempts_is_recorded(
    failing: Registry, test_database_url: str
) -> None:
    notify("nul", "late", durable=True)
    OutboxEvent.objects.update(attempts=100_000)
    claim_elsewhere(test_database_url, "nul", 1)  # a dead listener; recovery backs off
    notify("nul", "fresh", durable=True)
    Listener(["nul"], registry=failing, max_events=1).run()
    late, fresh = OutboxEvent.objects.order_by("id")
    assert (late.state, late.attempts) == ("pending", 100_001)
    assert late.available_at.year > fresh.available_at.year + 5  # ten years, capped
    assert (fresh.state, fresh.attempts) == ("pending", 1)


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
@pytest.mark.parametrize("listening_on", ["listener", "other"])
def test_no_statement_is_prepared_on_either_alias(
    registry: Registry,
    listening_on: str,
) -> None:
    # LISTENER_DATABASE, else DATABASE: DATABASE itself in the direct test bed,
    # the direct alias when DATABASE goes through PgBouncer (make test-pgbouncer).
    using = conf.listener_database() if listening_on == "listener" else listening_on
    prepared: list[bool] = []

    def look(event: Event) -> None:
        with connection.cursor() as cursor:  # the session that completes events
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            prepared.append(any("django_pgpubsub_outbox" in row[0] for row in cursor))

    registry.register(look, "jobs")
    for payload in ("1", "2"):
        notify("jobs", payload, durable=True)
    connection.close()  # a session that has prepared nothing yet
    Listener(["jobs"], using=using, registry=registry, max_events=2).run()
    assert not OutboxEvent.objects.exists()
    # Group commit runs no statement per event, so none is worth preparing:
    # any alias may be a transaction pooler's.
    assert prepared == [False, False]
