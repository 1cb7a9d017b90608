"""Group commit: many durable events in one transaction, each in a savepoint."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction

from django_pgpubsub import DurableEvent, Event, Registry, notify_many
from django_pgpubsub.db.claim_sql import CLAIM_SQL, START_GROUP_SQL
from django_pgpubsub.durable import group
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from tests.helpers import run_sql, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def one_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups end by their size alone, however slow this machine is now."""
    monkeypatch.setattr(group, "GROUP_SECONDS", 60.0)
    transactions.clear()


def queue(*payloads: str) -> None:
    with transaction.atomic():  # one claim
        notify_many([("jobs", payload) for payload in payloads], durable=True)


# Each user's name -> the (top-level) transaction that wrote it last.
transactions: dict[str, int] = {}


def create_user(name: str) -> None:
    User.objects.create(username=name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text::bigint")
        transactions[name] = cursor.fetchone()[0]


def committed_by() -> dict[str, int]:
    """Each committed user's name -> the transaction that wrote it."""
    return {name: transactions[name] for name in User.objects.values_list("username", flat=True)}


def test_a_group_commits_its_events_writes_in_one_transaction(registry: Registry) -> None:
    registry.register(lambda event: create_user(event.payload), "jobs")
    queue("a", "b", "c", "d")
    Listener(["jobs"], registry=registry, max_events=4).run()
    assert len(set(committed_by().values())) == 1  # one transaction for the four
    assert sorted(committed_by()) == ["a", "b", "c", "d"]
    assert not OutboxEvent.objects.exists()


def test_a_raising_handler_in_a_group_rolls_back_its_own_writes_only(registry: Registry) -> None:

    def write_then_raise_on_c(event: Event) -> None:
        create_user(event.payload)
        if event.payload == "c":
            raise RuntimeError("c fails")

    registry.register(write_then_raise_on_c, "jobs")
    queue("a", "b", "c", "d", "e")
    Listener(["jobs"], registry=registry, max_events=5).run()
    written = committed_by()
    assert sorted(written) == ["a", "b", "d", "e"]
    assert len(set(written.values())) == 1  # the same group, committed once
    [failed] = OutboxEvent.objects.all()
    assert (failed.payload, failed.state, failed.attempts) == ("c", "pending", 1)
    assert "RuntimeError: c fails" in failed.last_error


def test_a_handler_that_marks_rollback_in_a_group_fails_alone(registry: Registry) -> None:

    def write_then_mark_b(event: Event) -> None:
        create_user(event.payload)
        if event.payload == "b":
            transaction.set_rollback(True)

    registry.register(write_then_mark_b, "jobs")
    queue("a", "b", "c")
    Listener(["jobs"], registry=registry, max_events=3).run()
    written = committed_by()
    assert sorted(written) == ["a", "c"]
    assert written["a"] == written["c"]  # the same group, committed once
    [failed] = OutboxEvent.objects.all()
    assert (failed.payload, failed.state, failed.attempts) == ("b", "pending", 1)
    assert "marked for rollback" in failed.last_error


def test_a_claim_lost_mid_group_rolls_back_from_the_first_lost_event_on(
    registry: Registry, test_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    taken: list[str] = []

    def write(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        if event.payload == "c" and not taken:
            # Another listener's recovery takes c, d and e back meanwhile.
            taken.append("c")
            run_sql(
                test_database_url,
                "UPDATE django_pgpubsub_outbox SET state = 'pending', claim_token = NULL, "
                "started_at = NULL WHERE payload IN ('c', 'd', 'e')",
            )
        create_user(f"{event.payload}-{event.attempt}")

    registry.register(write, "jobs")
    queue("a", "b", "c", "d", "e")
    Listener(["jobs"], registry=registry, max_events=5).run()
    written = committed_by()
    # a and b committed with their completions; c, d and e (whose first
    # writes were rolled back) ran again, under a claim of their own.
    assert sorted(written) == ["a-1", "b-1", "c-2", "d-2", "e-2"]
    assert written["a-1"] == written["b-1"] != written["c-2"]
    assert not OutboxEvent.objects.exists()
    assert "was claimed again while its group's handlers ran" in caplog.text


def test_a_crashed_groups_events_get_their_attempt_back_and_run_alone(
    registry: Registry,
    test_database_url: str,
) -> None:
    """A listener died mid-group: which event killed it is unknown, so none of
    the group is charged, and each runs alone from then on."""
    queue("a", "b", "c")
    token = str(uuid.uuid4())
    params: dict[str, Any] = {
        "channels": ["jobs"],
        "limit": 3,
        "token": token,
        "lease": 60.0,
        "holder": random.getrandbits(63),
        "blocking": ["pending", "running"],
        "only": None,
        "next": None,
    }
    ids = [row[0] for row in run_sql(test_database_url, CLAIM_SQL, params)]  # type: ignore[arg-type]
    run_sql(test_database_url, START_GROUP_SQL, {**params, "ids": ids, "max_bytes": 10**6})  # type: ignore[arg-type]
    # That session has ended: its holder key's advisory lock is gone.
    assert sorted(OutboxEvent.objects.values_list("attempts", "alone")) == [(1, False)] * 3
    seen: list[tuple[str, int, Any]] = []

    def remember(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        alone = OutboxEvent.objects.get(id=event.id).alone
        seen.append((event.payload, event.attempt, alone))
        create_user(event.payload)

    registry.register(remember, "jobs")
    Listener(["jobs"], registry=registry, max_events=3).run()
    assert seen == [("a", 1, True), ("b", 1, True), ("c", 1, True)]
    # Alone, each committed in a transaction of its own.
    assert len(set(committed_by().values())) == 3
    wait_until(lambda: not OutboxEvent.objects.exists(), 10, "an empty outbox")


@pytest.mark.parametrize("failure", ["raise", "set_rollback"])
def test_handled_events_keep_their_on_commit_callbacks_when_a_neighbour_fails(
    registry: Registry,
    failure: str,
) -> None:
    """a registers a callback and runs no SQL; b writes, registers one and
    fails; c writes; d registers one. a's and d's callbacks run, once their
    events are completed; b's never does."""
    ran: list[str] = []
    completed_when_run: list[bool] = []

    def callback(name: str, event_id: int) -> Any:
        def call() -> None:
            ran.append(name)
            completed_when_run.append(not OutboxEvent.objects.filter(id=event_id).exists())

        return call

    def handle(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        if event.payload in ("b", "c"):
            create_user(event.payload)
        if event.payload in ("a", "b", "d"):
            transaction.on_commit(callback(event.payload, event.id))
        if event.payload == "b":
            if failure == "raise":
                raise RuntimeError("b fails")
            transaction.set_rollback(True)

    registry.register(handle, "jobs")
    queue("a", "b", "c", "d")
    Listener(["jobs"], registry=registry, max_events=4).run()
    assert ran == ["a", "d"]
    assert completed_when_run == [True, True]
    assert sorted(committed_by()) == ["c"]
    [failed] = OutboxEvent.objects.all()
    assert (failed.payload, failed.state, failed.attempts) == ("b", "pending", 1)


def test_a_failed_events_callbacks_never_run_after_its_neighbours_writes(
    registry: Registry,
) -> None:
    """Django ties callbacks to atomic blocks, not to savepoints: those of an
    event rolled back to its savepoint are dropped by the group."""
    ran: list[str] = []

    def handle(event: Event) -> None:
        create_user(event.payload)
        transaction.on_commit(lambda: ran.append(event.payload))
        if event.payload == "b":
            raise RuntimeError("b fails")

    registry.register(handle, "jobs")
    queue("a", "b", "c")
    Listener(["jobs"], registry=registry, max_events=3).run()
    assert ran == ["a", "c"]
    assert sorted(committed_by()) == ["a", "c"]


def test_a_commit_time_failure_is_charged_to_its_event_and_its_neighbours_rerun_at_once(
    registry: Registry, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: a dangling
    reference fails at COMMIT. The group's other events run again alone at
    once (not after DURABLE_LEASE), and the culprit fails with its own error."""
    from tests.testapp.models import Order

    # A wait for the lease would time the test out.
    settings.PGPUBSUB = {**settings.PGPUBSUB, "DURABLE_MAX_ATTEMPTS": 1, "DURABLE_LEASE": 600.0}
    ran: list[str] = []

    def handle(event: Event) -> None:
        if event.payload == "bad":
            Order.objects.create(customer_id=2_000_000_000)  # no such user
        else:
            create_user(event.payload)
        transaction.on_commit(lambda: ran.append(event.payload))

    registry.register(handle, "jobs")
    good = [f"u{n}" for n in range(7)]
    queue(*good[:3], "bad", *good[3:])
    Listener(["jobs"], registry=registry, max_events=8).run()
    assert sorted(committed_by()) == good
    assert len(set(committed_by().values())) == 7  # each alone, after the failed group
    assert sorted(ran) == good  # once each: the failed group's callbacks never ran
    [failed] = OutboxEvent.objects.all()
    assert (failed.payload, failed.state, failed.attempts) == ("bad", "failed", 1)
    assert "IntegrityError" in failed.last_error
    assert "foreign key" in failed.last_error
    assert not Order.objects.exists()
    assert "failed to commit" in caplog.text
