"""Ordering keys across three real ``listen_events`` processes."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from django.db import connection, transaction

from django_pgpubsub import notify_many
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ManagePy, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

KEYS, PER_KEY = 10, 15


@pytest.fixture
def ordering_log() -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE ordering_log (key text, seq int, attempt int, pid int, "
            "started timestamptz, ended timestamptz, failed boolean)"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE ordering_log")


def test_three_listeners_run_each_keys_events_one_at_a_time_in_order(
    listen_events: Callable[..., ManagePy], ordering_log: None
) -> None:
    rng = random.Random(22)
    failing = (3, 7)  # key 3's event 7 fails its first attempt
    items = [
        (
            "test.durable.ordered",
            {"key": f"k{k}", "seq": n, "sleep": rng.uniform(0, 0.03), "fail": (k, n) == failing},
            None,
            f"k{k}",
        )
        for n in range(PER_KEY)
        for k in range(KEYS)
    ]
    listeners = [listen_events("--channel", "test.durable.ordered") for _ in range(3)]
    with transaction.atomic():
        assert notify_many(items, durable=True) == KEYS * PER_KEY
    wait_until(lambda: not OutboxEvent.objects.exists(), 120, "every event handled")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT key, seq, attempt, pid, started, ended, failed FROM ordering_log "
            "ORDER BY key, started"
        )
        rows = cursor.fetchall()
    assert all(listener.process.poll() is None for listener in listeners)
    by_key: dict[str, list[tuple[int, int, int, datetime, datetime | None, bool]]] = defaultdict(
        list
    )
    for key, seq, attempt, pid, started, ended, failed in rows:
        by_key[key].append((seq, attempt, pid, started, ended, failed))
    assert sorted(by_key) == sorted(f"k{k}" for k in range(KEYS))
    pids = set()
    for key, runs in by_key.items():
        expected = [(n, 1) for n in range(PER_KEY)]
        if key == f"k{failing[0]}":
            expected.insert(failing[1] + 1, (failing[1], 2))  # the retry, before the next
        assert [(seq, attempt) for seq, attempt, *_ in runs] == expected, key
        for before, after in itertools.pairwise(runs):
            assert before[4] is not None, (key, before)
            assert before[4] <= after[3], (key, before, after)  # never overlapping
        pids |= {pid for _, _, pid, *_ in runs}
    assert [failed for runs in by_key.values() for *_, failed in runs].count(True) == 1
    assert len(pids) > 1  # the keys were shared among the listeners
