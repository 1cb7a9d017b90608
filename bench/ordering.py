"""Ordering keys: durable throughput over 4 listener processes with the events
spread over 1, 10 and 1,000 ordering keys, against the same events without
keys, in the same run.

``python -m bench --only ordering`` (``make bench BENCH_ARGS="--only
ordering"``). The same 4 listeners (``listen_events``, trivial handler) serve
every case; the cases alternate round by round (none, 1, 10, 1,000, none...),
and each figure is the median of its rounds. Each round stores its events in
one transaction (``notify_many``), key ``k<i mod keys>`` for event ``i``, and
ends when the outbox is empty.

With 10 keys and 4 listeners, the first claim after the store takes every
key's first event at once (a claim takes the head of each key's line, up to
``DURABLE_BATCH_SIZE``): the shares of each listener, measured from the
outbox's ``holder_key`` while the round runs, show how evenly the keys end
up spread.

The claim figures: one claim's time with a deep backlog (``backlog`` events
pending over 1, 10 and 1,000 keys), ``CLAIM_SQL``, which skips the events
stored behind their key's head.
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from django.db import connection, connections, transaction

from django_pgpubsub import notify
from django_pgpubsub.db import claim_sql, sql

CHANNEL = "bench.durable"
PROCESSES = 4
CASES: tuple[int | None, ...] = (None, 1, 10, 1_000)


@dataclass
class OrderingSizes:
    events: int = 1_000  # per case and round
    rounds: int = 2
    backlog: int = 100_000  # pending events of the claim figures (a deep backlog)
    claims: int = 5  # claim statements timed per case


QUICK_ORDERING = OrderingSizes(events=200, rounds=1, backlog=2_000, claims=2)


def _empty() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {sql.OUTBOX_TABLE}")
        cursor.execute(f"VACUUM ANALYZE {sql.OUTBOX_TABLE}")


def _left() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {sql.OUTBOX_TABLE}")
        [(count,)] = cursor.fetchall()
    return int(count)


class _Shares:
    """Samples, every 10 ms, which listener holds each started event (by the
    random key of its listening session, which its claims carry)."""

    def __init__(self) -> None:
        self.samples: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from django.db import connections

        try:
            with connections["default"].cursor() as cursor:
                while not self._stop.wait(0.01):
                    cursor.execute(
                        f"SELECT holder_key FROM {sql.OUTBOX_TABLE} "
                        "WHERE state = 'running' AND started_at IS NOT NULL"
                    )
                    self.samples.update(key for (key,) in cursor.fetchall())
        finally:
            connections["default"].close()

    def stop(self) -> list[float]:
        """Each listener's share of the samples, largest first."""
        self._stop.set()
        self._thread.join()
        total = sum(self.samples.values()) or 1
        return sorted((count / total for count in self.samples.values()), reverse=True)


def rate(keys: int | None, events: int) -> tuple[float, list[float]]:
    """Events per second from the store to an empty outbox, and the listeners'
    shares of the started events."""
    from django_pgpubsub import notify_many

    _empty()
    items = [
        (CHANNEL, f'{{"id":{i}}}', None, None if keys is None else f"k{i % keys}")
        for i in range(events)
    ]
    shares = _Shares()
    started = time.perf_counter()
    with transaction.atomic():
        notify_many(items, durable=True)
    while _left():
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    return events / elapsed, shares.stop()


FILL_SQL = f"""
INSERT INTO {sql.OUTBOX_TABLE} (channel, payload, ordering_key, sender_pid, state, attempts,
    created_at, available_at, last_error)
SELECT %(channel)s, '', CASE WHEN %(keys)s = 0 THEN NULL ELSE 'k' || (i %% %(keys)s) END,
    0, 'pending', 0, now(), now(), ''
FROM generate_series(1, %(count)s) AS i
"""


WRITERS = 4


def store_rate(keys: int | None, events: int) -> float:
    """Durable events stored per second by ``WRITERS`` threads, one event per
    transaction: without a key, or over ``keys`` keys (writer n uses key n
    modulo ``keys``)."""
    _empty()
    per_writer = max(events // WRITERS, 1)
    start = threading.Barrier(WRITERS + 1)

    def write(n: int) -> None:
        key = None if keys is None else f"w{n % keys}"
        try:
            start.wait()
            for i in range(per_writer):
                with transaction.atomic():
                    notify(CHANNEL, str(i), durable=True, ordering_key=key)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    _empty()
    return per_writer * WRITERS / elapsed


def claim_ms(keys: int | None, backlog: int, claims: int) -> float:
    """Median milliseconds of one claim (of up to 100 events, rolled back) with
    ``backlog`` events pending over ``keys`` keys: ``CLAIM_SQL``, which skips
    the events stored behind their key's head."""
    _empty()
    with connection.cursor() as cursor:
        cursor.execute(FILL_SQL, {"channel": CHANNEL, "keys": keys or 0, "count": backlog})
        cursor.execute(f"VACUUM ANALYZE {sql.OUTBOX_TABLE}")
    times = []
    for _ in range(claims):
        params = {
            "channels": [CHANNEL],
            "limit": 100,
            "token": str(uuid.uuid4()),
            "lease": 60,
            "holder": None,
            "blocking": ["pending", "running"],
            "only": None,
        }
        with transaction.atomic(), connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.execute(claim_sql.CLAIM_SQL, params)
            rows = cursor.fetchall()
            times.append(time.perf_counter() - started)
            transaction.set_rollback(True)
        assert len(rows) == min(100, keys or 100), len(rows)
    _empty()
    return statistics.median(times) * 1000


def ordering_figures(sizes: OrderingSizes, listener_class: Any) -> list[dict[str, Any]]:
    """The figures, as keyword arguments of ``bench.__main__.Figure``."""
    listeners = [listener_class("library", CHANNEL, None) for _ in range(PROCESSES)]
    rates: dict[int | None, list[float]] = {keys: [] for keys in CASES}
    busiest: dict[int | None, list[float]] = {keys: [] for keys in CASES}
    try:
        for _ in range(sizes.rounds):
            for keys in CASES:
                value, shares = rate(keys, sizes.events)
                rates[keys].append(value)
                busiest[keys].append(shares[0] if shares else 0.0)
    finally:
        for listener in listeners:
            listener.process.send_signal(signal.SIGTERM)
            listener.finish()
    none = statistics.median(rates[None])
    figures: list[dict[str, Any]] = [
        {
            "name": f"ordering, no keys, {PROCESSES} listeners",
            "unit": "events/s",
            "raw": None,
            "library": none,
        },
    ]
    for keys in CASES[1:]:
        assert keys is not None
        figures.append(
            {
                "name": f"ordering, {keys:,} key(s) vs none",
                "unit": "events/s",
                "raw": none,
                "library": statistics.median(rates[keys]),
            }
        )
    for keys in CASES:
        label = "no keys" if keys is None else f"{keys:,} key(s)"
        figures.append(
            {
                "name": f"ordering, busiest share, {label}",
                "unit": "%",
                "raw": None,
                "library": 100 * statistics.median(busiest[keys]),
            }
        )
    # Storing: each keyed event takes its key's lock, so writers of one key
    # wait for each other's commits; writers of distinct keys do not.
    unkeyed = store_rate(None, sizes.events)
    for keys, label in ((WRITERS, "distinct keys"), (1, "one key")):
        figures.append(
            {
                "name": f"storing keyed events, {WRITERS} writers, {label} vs no key",
                "unit": "events/s",
                "raw": unkeyed,
                "library": store_rate(keys, sizes.events),
            }
        )
    none = claim_ms(None, sizes.backlog, sizes.claims)
    figures.append(
        {
            "name": f"ordering claim, {sizes.backlog:,} pending, no keys",
            "unit": "ms",
            "raw": None,
            "library": none,
        }
    )
    for keys in CASES[1:]:
        assert keys is not None
        figures.append(
            {
                "name": f"ordering claim, {sizes.backlog:,} pending, {keys:,} key(s)",
                "unit": "ms",
                "raw": None,
                "library": claim_ms(keys, sizes.backlog, sizes.claims),
            }
        )
    return figures
