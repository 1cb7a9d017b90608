"""Ordering keys of durable events: one at a time per key, in id order, across
listeners; what blocks a key and what does not; real PostgreSQL."""

from __future__ import annotations

import re
import threading
import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from prometheus_client import CollectorRegistry, generate_latest

from django_pgpubsub import DurableEvent, Event, InvalidPayload, Registry, notify, notify_many
from django_pgpubsub.db.claim_sql import CLAIM_SQL
from django_pgpubsub.db.ordering_sql import PROMOTE_SQL
from django_pgpubsub.durable.claim import Claimed
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.ops.metrics import ListenerMetrics
from django_pgpubsub.testing import eager
from tests.helpers import run_sql, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CONTINUE = ["pending", "running"]
BLOCK = ["pending", "running", "failed"]


def claim(url: str, limit: int = 10, blocking: list[str] = CONTINUE) -> list[str]:
    """The payloads that a listener's claim takes now (they stay claimed: the
    holder key is None, so only the lease would bring them back)."""
    params: dict[str, Any] = {
        "channels": ["jobs"],
        "limit": limit,
        "token": str(uuid.uuid4()),
        "lease": 60.0,
        "holder": None,
        "blocking": blocking,
        "only": None,
    }
    rows = [Claimed(*row) for row in run_sql(url, CLAIM_SQL, params)]  # type: ignore[arg-type]
    return [OutboxEvent.objects.get(id=row.id).payload for row in sorted(rows)]


def store(*items: tuple[str, str | None]) -> None:
    for payload, ordering_key in items:
        notify("jobs", payload, durable=True, ordering_key=ordering_key)


def set_state(payload: str, blocking: list[str] = CONTINUE, **values: Any) -> None:
    """Change an event as a listener would; a dead letter's key moves on as the
    listener lets it (under "continue": ``blocking`` without "failed")."""
    OutboxEvent.objects.filter(payload=payload).update(**values)
    if values.get("state") == "failed":
        [key] = OutboxEvent.objects.filter(payload=payload).values_list("ordering_key", flat=True)
        with connection.cursor() as cursor:
            cursor.execute(PROMOTE_SQL, {"keys": [key], "blocking": blocking})


def test_only_the_head_of_each_key_is_claimed_and_keys_run_in_parallel(
    test_database_url: str,
) -> None:
    store(("a1", "a"), ("b1", "b"), ("a2", "a"), ("none", None), ("b2", "b"), ("a3", "a"))
    # Two listeners: the first takes one event, the second the other key's head.
    assert claim(test_database_url, limit=1) == ["a1"]
    assert claim(test_database_url, limit=10) == ["b1", "none"]
    assert claim(test_database_url) == []  # a2 and b2 wait for their heads
    OutboxEvent.objects.filter(payload="a1").delete()  # handled
    assert claim(test_database_url) == ["a2"]


def test_an_event_waiting_for_its_retry_blocks_only_its_own_key(test_database_url: str) -> None:
    """procrastinate #1599: a job scheduled later stalled its whole lock's queue,
    and its successors must not jump ahead of it either."""
    store(("a1", "a"), ("a2", "a"), ("b1", "b"), ("none", None))
    set_state("a1", attempts=1, available_at="2999-01-01T00:00:00Z", last_error="boom")
    assert claim(test_database_url) == ["b1", "none"]
    assert claim(test_database_url) == []
    set_state("a1", available_at="2000-01-01T00:00:00Z")  # its retry is due
    assert claim(test_database_url) == ["a1"]


def test_a_dead_letter_lets_its_key_continue_by_default(test_database_url: str) -> None:
    store(("a1", "a"), ("a2", "a"))
    set_state("a1", state="failed", attempts=5)
    assert claim(test_database_url, blocking=CONTINUE) == ["a2"]


def test_a_dead_letter_blocks_its_key_until_retried_or_deleted(test_database_url: str) -> None:
    store(("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"))
    set_state("a1", BLOCK, state="failed", attempts=5)
    assert claim(test_database_url, blocking=BLOCK) == ["b1"]
    assert OutboxEvent.objects.filter(payload="a1").retry() == 1
    assert claim(test_database_url, blocking=BLOCK) == ["a1"]  # first in its key's line
    OutboxEvent.objects.filter(payload="a1").delete()
    set_state("a2", BLOCK, state="failed", attempts=5)
    assert claim(test_database_url, blocking=BLOCK) == []
    OutboxEvent.objects.filter(payload="a2").delete()  # what purge does
    assert claim(test_database_url, blocking=BLOCK) == ["a3"]


def test_a_retried_dead_letter_never_runs_beside_its_keys_running_event(
    test_database_url: str,
) -> None:
    store(("a1", "a"), ("a2", "a"), ("a3", "a"))
    set_state("a1", state="failed", attempts=5)
    assert claim(test_database_url) == ["a2"]
    assert OutboxEvent.objects.filter(payload="a1").retry() == 1
    assert claim(test_database_url) == []  # a2 runs: a1 waits, and a3 behind both
    OutboxEvent.objects.filter(payload="a2").delete()
    assert claim(test_database_url) == ["a1"]


@pytest.fixture
def ordered() -> tuple[Registry, list[tuple[str, int]]]:
    """Handlers of "jobs": record (payload, attempt); "a2" fails its first attempt."""
    seen: list[tuple[str, int]] = []
    registry = Registry()

    def handle(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        seen.append((event.payload, event.attempt))
        if event.payload == "a2" and event.attempt == 1:
            raise RuntimeError("fails once")

    registry.register(handle, "jobs")
    return registry, seen


@override_settings(PGPUBSUB={"DURABLE_RETRY_DELAY": 0.2, "DURABLE_POLL_INTERVAL": 0.2})
def test_a_failed_attempt_holds_its_key_until_it_succeeds(
    ordered: tuple[Registry, list[tuple[str, int]]],
) -> None:
    registry, seen = ordered
    store(("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("b2", "b"))
    Listener(["jobs"], registry=registry, max_events=6).run()
    keyed_a = [item for item in seen if item[0].startswith("a")]
    assert keyed_a == [("a1", 1), ("a2", 1), ("a2", 2), ("a3", 1)]
    assert [item for item in seen if item[0].startswith("b")] == [("b1", 1), ("b2", 1)]
    # b's events did not wait for a2's retry.
    assert seen.index(("b2", 1)) < seen.index(("a2", 2))
    assert not OutboxEvent.objects.exists()


@override_settings(
    PGPUBSUB={
        "DURABLE_MAX_ATTEMPTS": 1,
        "DURABLE_POLL_INTERVAL": 0.2,
        "ORDERING_ON_DEAD_LETTER": "block",
    }
)
def test_block_keeps_a_dead_letters_key_waiting_in_the_listener(
    ordered: tuple[Registry, list[tuple[str, int]]],
) -> None:
    registry, seen = ordered
    store(("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"))
    Listener(["jobs"], registry=registry, max_events=3).run()
    assert sorted(seen) == [("a1", 1), ("a2", 1), ("b1", 1)]
    assert list(OutboxEvent.objects.order_by("id").values_list("payload", "state")) == [
        ("a2", "failed"),
        ("a3", "pending"),
    ]


@override_settings(PGPUBSUB={"DURABLE_MAX_ATTEMPTS": 1, "DURABLE_POLL_INTERVAL": 0.2})
def test_continue_moves_a_dead_letters_key_on_in_the_listener(
    ordered: tuple[Registry, list[tuple[str, int]]],
) -> None:
    registry, seen = ordered
    store(("a1", "a"), ("a2", "a"), ("a3", "a"))
    Listener(["jobs"], registry=registry, max_events=3).run()
    assert seen == [("a1", 1), ("a2", 1), ("a3", 1)]
    assert list(OutboxEvent.objects.values_list("payload", "state")) == [("a2", "failed")]


@pytest.mark.parametrize(
    "bad", ["", "a\x00b", 42, b"bytes", "x" * 1025, "é" * 513, "\ud800"], ids=repr
)
def test_unusable_ordering_keys_are_refused_before_any_sql(bad: Any) -> None:
    with pytest.raises(InvalidPayload, match="ordering key"):
        notify("jobs", "p", durable=True, ordering_key=bad)
    with pytest.raises(InvalidPayload, match="ordering key"):
        notify_many([("jobs", "p", None, bad)], durable=True)
    assert not OutboxEvent.objects.exists()


def test_the_longest_ordering_key_is_stored() -> None:
    assert notify("jobs", "p", durable=True, ordering_key="é" * 512) is True
    assert OutboxEvent.objects.get().ordering_key == "é" * 512


def test_an_ordering_key_without_durable_is_refused() -> None:
    with pytest.raises(InvalidPayload, match="durable=True"):
        notify("jobs", "p", ordering_key="a")
    with pytest.raises(InvalidPayload, match="durable=True"):
        notify_many([("jobs", "p", None, "a")])


def test_notify_many_stores_ordering_keys_in_the_order_given(test_database_url: str) -> None:
    items = [("jobs", f"{key}{n}", None, key) for n in (1, 2, 3) for key in "ab"]
    assert notify_many([*items, ("jobs", "none"), ("jobs", "k", "idem")], durable=True) == 8
    stored = OutboxEvent.objects.order_by("id").values_list("payload", "ordering_key", "key")
    assert list(stored)[:3] == [("a1", "a", None), ("b1", "b", None), ("a2", "a", None)]
    assert list(stored)[-2:] == [("none", None, None), ("k", None, "idem")]
    assert claim(test_database_url) == ["a1", "b1", "none", "k"]


def test_blocked_keys_in_status_and_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    store(("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("none", None))
    assert OutboxEvent.objects.blocked_keys() == (0, None)
    set_state("a1", attempts=1, available_at="2999-01-01T00:00:00Z")  # waits for its retry
    set_state("b1", attempts=5, state="failed")  # a dead letter
    set_state("c1", attempts=1, available_at="2999-01-01T00:00:00Z")  # nothing behind it
    OutboxEvent.objects.filter(payload="a2").update(created_at="2000-01-01T00:00:00Z")
    count, oldest = OutboxEvent.objects.blocked_keys()
    assert count == 1
    assert oldest is not None
    assert oldest > 3600 * 24 * 365
    with override_settings(PGPUBSUB={"ORDERING_ON_DEAD_LETTER": "block"}):
        assert OutboxEvent.objects.blocked_keys()[0] == 2
        call_command("durable_events", "status")
    assert "2 ordering key(s) blocked by a failed attempt" in capsys.readouterr().out
    metrics = ListenerMetrics("default", channels=["jobs"], refresh_interval=0)
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    assert "pgpubsub_durable_blocked_keys 1.0" in text
    [age] = re.findall(r"^pgpubsub_durable_oldest_blocked_seconds (\S+)$", text, re.MULTILINE)
    assert float(age) > 3600 * 24 * 365


def test_eager_mode_runs_keyed_events_in_order(registry: Registry) -> None:
    seen: list[str] = []
    registry.register(lambda event: seen.append(event.payload), "jobs")
    with eager(registry):
        notify_many([("jobs", "a1", None, "a"), ("jobs", "b1", None, "b")], durable=True)
        notify("jobs", "a2", durable=True, ordering_key="a")
    assert seen == ["a1", "b1", "a2"]
    assert not OutboxEvent.objects.exists()


def test_one_key_is_one_line_across_channels(test_database_url: str) -> None:
    notify("other", "a1", durable=True, ordering_key="a")
    store(("a2", "a"), ("b1", "b"))
    assert claim(test_database_url) == ["b1"]  # a2 waits for a1, on another channel


def store_a1_and_wait(stored: threading.Event, may_commit: threading.Event) -> None:
    """Writer A (in a thread): store a1 of key a, and commit only when told."""
    try:
        with transaction.atomic():
            notify("jobs", "a1", durable=True, ordering_key="a")
            stored.set()
            may_commit.wait(30)
    finally:
        connection.close()


def test_a_keys_events_run_in_the_order_stored_whatever_the_commit_order(
    registry: Registry,
    test_database_url: str,
) -> None:
    """Writer A stores a1 and keeps its transaction open; writer B stores a2:
    B waits for A's commit (an advisory lock on the key), so a2 is numbered,
    committed and run after a1."""
    a_stored, a_may_commit = threading.Event(), threading.Event()
    b_stored = threading.Event()

    def writer_b() -> None:
        try:
            with transaction.atomic():
                notify("jobs", "a2", durable=True, ordering_key="a")
                notify("jobs", "b1", durable=True, ordering_key="b")
            b_stored.set()
        finally:
            connection.close()

    first = threading.Thread(target=store_a1_and_wait, args=(a_stored, a_may_commit))
    first.start()
    assert a_stored.wait(10)
    second = threading.Thread(target=writer_b)
    second.start()
    wait_until(
        lambda: bool(
            run_sql(
                test_database_url,
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            )
        ),
        10,
        "writer B waiting for the key",
    )
    assert not b_stored.is_set()
    a_may_commit.set()
    first.join(10)
    second.join(10)
    assert b_stored.is_set()
    rows = list(OutboxEvent.objects.order_by("id").values_list("payload", flat=True))
    assert rows == ["a1", "a2", "b1"]  # numbered after the lock: in commit order
    seen: list[str] = []
    registry.register(lambda event: seen.append(event.payload), "jobs")
    Listener(["jobs"], registry=registry, max_events=3).run()
    assert [payload for payload in seen if payload.startswith("a")] == ["a1", "a2"]


def test_writers_of_different_keys_never_wait_for_each_other(test_database_url: str) -> None:
    a_stored, a_may_commit = threading.Event(), threading.Event()
    first = threading.Thread(target=store_a1_and_wait, args=(a_stored, a_may_commit))
    first.start()
    try:
        assert a_stored.wait(10)
        store(("b1", "b"), ("u1", None))  # in autocommit: returns while A is open
        assert claim(test_database_url) == ["b1", "u1"]
    finally:
        a_may_commit.set()
        first.join(10)
