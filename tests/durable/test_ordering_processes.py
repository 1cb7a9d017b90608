"""Ordering keys across three real ``listen_events`` processes."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from django.db import connection, transaction

from django_pgpubsub import notify, notify_many
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ManagePy, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

KEYS, PER_KEY = 10, 15
# Keys stored by concurrent writers whose commits come in random order.
WRITTEN_KEYS, PER_WRITTEN_KEY = 4, 6


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
    store_with_commits_out_of_order(rng)  # while the listeners are idle
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
    written = [f"w{k}" for k in range(WRITTEN_KEYS)]
    assert sorted(by_key) == sorted([f"k{k}" for k in range(KEYS)] + written)
    pids = set()
    for key, runs in by_key.items():
        expected = [(n, 1) for n in range(PER_WRITTEN_KEY if key in written else PER_KEY)]
        if key == f"k{failing[0]}":
            expected.insert(failing[1] + 1, (failing[1], 2))  # the retry, before the next
        assert [(seq, attempt) for seq, attempt, *_ in runs] == expected, key
        for before, after in itertools.pairwise(runs):
            assert before[4] is not None, (key, before)
            assert before[4] <= after[3], (key, before, after)  # never overlapping
        pids |= {pid for _, _, pid, *_ in runs}
    assert [failed for runs in by_key.values() for *_, failed in runs].count(True) == 1
    assert len(pids) > 1  # the keys were shared among the listeners


def store_with_commits_out_of_order(rng: random.Random) -> None:
    """Per key, event n is stored once event n-1 is (its transaction still
    open), and each transaction commits after a random delay: without the
    key's lock, n could commit, and run, before n-1."""

    def write(
        key: str, seq: int, stored: threading.Event, previous: threading.Event | None
    ) -> None:
        delay = rng.uniform(0, 0.1)
        try:
            if previous is not None:
                assert previous.wait(30)
            with transaction.atomic():
                payload = {"key": key, "seq": seq, "sleep": 0, "fail": False}
                notify("test.durable.ordered", payload, durable=True, ordering_key=key)
                stored.set()  # n+1 is stored while n is still open
                time.sleep(delay)
        finally:
            connection.close()

    threads = []
    for k in range(WRITTEN_KEYS):
        previous = None
        for n in range(PER_WRITTEN_KEY):
            stored = threading.Event()
            threads.append(threading.Thread(target=write, args=(f"w{k}", n, stored, previous)))
            previous = stored
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
