"""The ``behind`` hint of keyed durable events: who sets it, who
clears it, the lost wake-up and its repair; real PostgreSQL, two connections
where the race needs them."""

from __future__ import annotations

import math
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.backends.postgresql.base import (  # type: ignore[attr-defined]  # untyped: the driver
    Database,
)
from django.test import override_settings

from django_pgpubsub import DurableEvent, Event, Registry, notify, notify_many
from django_pgpubsub.db import claim_sql, ordering_sql, sql
from django_pgpubsub.durable import outbox as outbox_module
from django_pgpubsub.durable.claim import Claim
from django_pgpubsub.durable.outbox import Outbox
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.vocabulary.observer import Observer
from tests.helpers import ListenerThread, run_sql, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CONTINUE = ["pending", "running"]


def flags() -> dict[str, bool]:
    """Payload -> behind, of every stored event."""
    return dict(OutboxEvent.objects.order_by("id").values_list("payload", "behind"))


def claim(
    url: str, statement: str = claim_sql.CLAIM_SQL, blocking: list[str] = CONTINUE
) -> list[str]:
    """The payloads a listener's claim takes now (they stay claimed)."""
    params: dict[str, Any] = {
        "channels": ["jobs"],
        "limit": 10,
        "token": str(uuid.uuid4()),
        "lease": 60.0,
        "holder": None,
        "blocking": blocking,
        "only": None,
    }
    ids = sorted(row[0] for row in run_sql(url, statement, params))  # type: ignore[arg-type]
    return [OutboxEvent.objects.get(id=i).payload for i in ids]


def test_every_sender_flags_the_events_stored_behind_their_keys_head() -> None:
    notify("jobs", "a1", durable=True, ordering_key="a")
    notify("jobs", "a2", durable=True, ordering_key="a")
    # In one statement: each row sees the rows stored before it.
    notify_many(
        [("jobs", "b1", None, "b"), ("jobs", "b2", None, "b"), ("jobs", "a3", None, "a")],
        durable=True,
    )
    notify("jobs", "none", durable=True)
    # A writer that names only the base columns and the key (a trigger
    # frozen into a migration) is flagged all the same: a trigger sets it.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {sql.OUTBOX_TABLE} (channel, payload, ordering_key, sender_pid, "
            "state, attempts, created_at, available_at, last_error) "
            "VALUES ('jobs', 'b3', 'b', 0, 'pending', 0, now(), now(), '')"
        )
    assert flags() == {
        "a1": False,
        "a2": True,
        "b1": False,
        "b2": True,
        "a3": True,
        "none": False,
        "b3": True,
    }


def test_a_key_whose_earlier_events_are_dead_letters_is_not_behind() -> None:
    notify("jobs", "a1", durable=True, ordering_key="a")
    OutboxEvent.objects.filter(payload="a1").update(state="failed", attempts=5)
    notify("jobs", "a2", durable=True, ordering_key="a")
    assert flags() == {"a1": False, "a2": False}


def test_the_claim_skips_events_behind_and_the_deletion_of_a_head_promotes_the_next(
    test_database_url: str,
) -> None:
    notify_many([("jobs", p, None, "a") for p in ("a1", "a2", "a3")], durable=True)
    assert claim(test_database_url) == ["a1"]
    assert claim(test_database_url) == []
    OutboxEvent.objects.filter(payload="a1").delete()  # handled (or purged)
    assert flags() == {"a2": False, "a3": True}
    assert claim(test_database_url) == ["a2"]


def test_the_hint_is_never_trusted_a_stale_false_is_still_checked(
    test_database_url: str,
) -> None:
    notify_many([("jobs", p, None, "a") for p in ("a1", "a2")], durable=True)
    OutboxEvent.objects.update(behind=False)  # wrong: a2 waits for a1
    assert claim(test_database_url) == ["a1"]
    assert claim(test_database_url) == []


def handlers(failing: set[str]) -> tuple[Registry, list[str]]:
    seen: list[str] = []
    registry = Registry()

    def handle(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        seen.append(event.payload)
        if event.payload in failing:
            raise RuntimeError("fails")

    registry.register(handle, "jobs")
    return registry, seen


def run_one_claim(registry: Registry) -> None:
    claimed = Claim("default", Observer())
    assert claimed.take(["jobs"], 10)
    claimed.run({"jobs": registry.handlers("jobs")}, lambda: False, None, math.inf)


@pytest.mark.parametrize(("policy", "promoted"), [("continue", True), ("block", False)])
def test_a_dead_letter_promotes_its_keys_next_event_under_continue_only(
    policy: str, promoted: bool
) -> None:
    registry, seen = handlers({"a1"})
    notify_many([("jobs", p, None, "a") for p in ("a1", "a2", "a3")], durable=True)
    with override_settings(PGPUBSUB={"DURABLE_MAX_ATTEMPTS": 1, "ORDERING_ON_DEAD_LETTER": policy}):
        run_one_claim(registry)
    assert seen == ["a1"]
    assert OutboxEvent.objects.get(payload="a1").state == "failed"
    assert flags() == {"a1": False, "a2": not promoted, "a3": True}


def test_a_failed_attempt_with_attempts_left_keeps_its_key_waiting() -> None:
    registry, _ = handlers({"a1"})
    notify_many([("jobs", p, None, "a") for p in ("a1", "a2")], durable=True)
    with override_settings(PGPUBSUB={"DURABLE_MAX_ATTEMPTS": 3}):
        run_one_claim(registry)
    assert OutboxEvent.objects.get(payload="a1").state == "pending"
    assert flags() == {"a1": False, "a2": True}


@pytest.mark.parametrize(("policy", "promoted"), [("continue", True), ("block", False)])
def test_a_dead_letter_by_recovery_promotes_its_keys_next_event_under_continue_only(
    policy: str, promoted: bool
) -> None:
    notify_many([("jobs", p, None, "a") for p in ("a1", "a2")], durable=True)
    # a1's listener died during its last attempt: its lease is over.
    OutboxEvent.objects.filter(payload="a1").update(
        state="running", attempts=1, claim_token=uuid.uuid4(), started_at="2000-01-01T00:00Z",
        lease_expires_at="2000-01-01T00:00Z",
    )  # fmt: skip
    registry, _ = handlers(set())
    with override_settings(PGPUBSUB={"DURABLE_MAX_ATTEMPTS": 1, "ORDERING_ON_DEAD_LETTER": policy}):
        Outbox("default").sweep(
            {"jobs": registry.handlers("jobs")}, lambda: True, None, recover=True
        )
    assert OutboxEvent.objects.get(payload="a1").state == "failed"
    assert flags() == {"a1": False, "a2": not promoted}


def test_a_retried_dead_letter_goes_first_and_its_handling_promotes_the_next(
    test_database_url: str,
) -> None:
    notify_many([("jobs", p, None, "a") for p in ("a1", "a2")], durable=True)
    OutboxEvent.objects.filter(payload="a1").update(state="failed", attempts=5, behind=True)
    assert OutboxEvent.objects.filter(payload="a1").retry() == 1
    assert flags() == {"a1": False, "a2": True}
    with override_settings(PGPUBSUB={"ORDERING_ON_DEAD_LETTER": "block"}):
        assert claim(test_database_url, blocking=[*CONTINUE, "failed"]) == ["a1"]
    OutboxEvent.objects.filter(payload="a1").delete()
    assert claim(test_database_url) == ["a2"]


def test_purging_a_blocking_dead_letter_promotes_the_next(test_database_url: str) -> None:
    notify_many([("jobs", p, None, "a") for p in ("a1", "a2", "a3")], durable=True)
    OutboxEvent.objects.filter(payload="a1").update(
        state="failed", attempts=5, created_at="2000-01-01T00:00Z"
    )
    blocking = [*CONTINUE, "failed"]
    assert claim(test_database_url, blocking=blocking) == []
    assert OutboxEvent.objects.purge(timedelta(days=1)) == 1
    assert flags() == {"a2": False, "a3": True}
    assert claim(test_database_url, blocking=blocking) == ["a2"]


def test_a_lost_wake_up_is_repaired_and_the_event_handled_in_bounded_time(
    test_database_url: str,
) -> None:
    """The race: an event stored in a transaction still open while its key's
    head is handled is not seen by that head's promotion, and stays behind
    with nothing before it. A listener's periodic sweep repairs it."""
    notify("jobs", "a1", durable=True, ordering_key="a")
    assert claim(test_database_url) == ["a1"]  # a1 runs
    sender = Database.connect(test_database_url)  # a transaction of its own
    try:
        # Sees a1 running: behind.
        sender.cursor().execute(sql.STORE_ORDERED_QUIET_SQL, ("jobs", "a2", None, "a", None))
        OutboxEvent.objects.filter(payload="a1").delete()  # a1 handled meanwhile
        sender.commit()
    finally:
        sender.close()
    assert flags() == {"a2": True}  # behind nothing
    assert claim(test_database_url) == []  # what the race costs, until repaired
    registry, seen = handlers(set())
    with override_settings(PGPUBSUB={"DURABLE_POLL_INTERVAL": 0.2}):
        listener = ListenerThread(Listener(["jobs"], registry=registry, max_events=1))
        with listener:
            wait_until(lambda: seen == ["a2"], 30, "the repaired event's handling")
            assert listener.result() == 1
    assert not OutboxEvent.objects.exists()


def test_the_repair_walks_the_keys_a_bounded_number_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_module, "REPAIR_KEYS", 2)
    keys = ["k1", "k2", "k3", "k4", "k5"]
    notify_many([("other", f"{k}-{n}", None, k) for k in keys for n in (1, 2)], durable=True)
    OutboxEvent.objects.filter(payload__endswith="-1").delete()  # promotes each -2
    OutboxEvent.objects.update(behind=True)  # as if each promotion was lost
    outbox = Outbox("default")
    registry, _ = handlers(set())
    table = {"jobs": registry.handlers("jobs")}
    walks = []
    for _ in range(3):
        outbox.sweep(table, lambda: True, None, recover=True)
        walks.append(sorted(OutboxEvent.objects.filter(behind=False).values_list("payload")))
    assert [len(w) for w in walks] == [2, 4, 5]
    with connection.cursor() as cursor:
        cursor.execute(
            ordering_sql.REPAIR_SQL, {"after": "", "keys": 10, "blocking": CONTINUE, "wake": False}
        )
        assert cursor.fetchone() == (0, None, 0, 0)


def explain_claim(pending: int, keys: int, *, blocked: bool = False) -> tuple[str, int]:
    """Store ``pending`` events of "jobs" over ``keys`` keys (through the
    triggers: one statement), optionally hold the first key back by a retry,
    and return the claim's plan and the shared buffers it read."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {sql.OUTBOX_TABLE} (channel, payload, ordering_key, sender_pid, state,
                attempts, created_at, available_at, last_error)
            SELECT 'jobs', '', 'k' || (i %% %s), 0, 'pending', 0, now(), now(), ''
            FROM generate_series(1, %s) AS i
            """,
            (keys, pending),
        )
        if blocked:
            cursor.execute(
                f"UPDATE {sql.OUTBOX_TABLE} SET attempts = 1, "
                "available_at = now() + interval '1 hour' "
                f"WHERE id = (SELECT min(id) FROM {sql.OUTBOX_TABLE})"
            )
        cursor.execute(f"VACUUM ANALYZE {sql.OUTBOX_TABLE}")
        params = {
            "channels": ["jobs"],
            "limit": 100,
            "token": str(uuid.uuid4()),
            "lease": 60.0,
            "holder": None,
            "blocking": CONTINUE,
            "only": None,
        }
        cursor.execute("BEGIN")
        try:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + claim_sql.CLAIM_SQL, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("ROLLBACK")
    [hit] = re.findall(r"Buffers: shared hit=(\d+)", plan)[:1]
    read = re.findall(r"Buffers: shared hit=\d+ read=(\d+)", plan)[:1]
    return plan, int(hit) + int(read[0] if read else 0)


@pytest.mark.parametrize("keys", [1, 10])
def test_a_deep_backlog_over_few_keys_costs_the_claim_a_few_pages(keys: int) -> None:
    """100,000 pending events over 1 or 10 keys: the claim meets the keys'
    heads only (the rest are behind), and probes each through the ordering
    index. Without the hint it would probe every pending row (100,000+ pages)."""
    plan, buffers = explain_claim(100_000, keys)
    assert "Index Scan using pgpubsub_outbox_heads" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert f"rows={keys} loops=1" in plan.split("CTE picked")[1].split("\n")[1], plan
    assert buffers < 100 * keys + 200, plan


def test_the_claim_reads_a_few_pages_over_many_keys_and_a_blocked_key() -> None:
    """200,000 pending events over 10,000 keys, one key blocked by a retry: the
    claim reads the heads index and probes the keys through the ordering
    partial indexes, never a scan of the outbox. A few pages per claimed event
    (its row, its probes, its update): the blocked key's 19 later events and
    the other 190,000 rows are not read."""
    plan, buffers = explain_claim(200_000, 10_000, blocked=True)
    assert "Seq Scan" not in plan, plan
    assert "Index Scan using pgpubsub_outbox_heads" in plan, plan
    assert "Index Only Scan using pgpubsub_outbox_ordering" in plan, plan
    assert re.search(r"using pgpubsub_outbox_(key_)?running", plan), plan
    assert buffers < 5000, plan


@pytest.mark.slow
@pytest.mark.scale
def test_the_claim_reads_a_few_pages_over_a_million_events_ten_thousand_keys() -> None:
    """The issue's case: 1M pending over 10,000 keys, one blocked by a retry."""
    plan, buffers = explain_claim(1_000_000, 10_000, blocked=True)
    assert "Seq Scan" not in plan, plan
    assert buffers < 5000, plan


def test_publish_changes_triggers_rows_are_flagged_too() -> None:
    """A trigger frozen into a migration names no ``behind``: the outbox's own
    trigger sets it."""
    from tests.testapp.models import OrderedItem

    [item] = OrderedItem.objects.bulk_create([OrderedItem(name="a")])
    OrderedItem.objects.filter(pk=item.pk).update(step=1)
    OrderedItem.objects.filter(pk=item.pk).update(step=2)
    rows = OutboxEvent.objects.order_by("id").values_list("ordering_key", "behind")
    assert list(rows) == [
        (f"testapp.ordereditem:{item.pk}", behind) for behind in (False, True, True)
    ]
