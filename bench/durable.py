"""Durable-event benchmarks: throughput, backlog scaling, a parked channel.

Rows are generated in SQL (``generate_series``), so a million-row outbox takes
seconds to fill. Every figure is a rate or a time from this run; the targets
are ratios between figures of the same run.
"""

from __future__ import annotations

import signal
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from django_pgpubsub.db import sql

CHANNEL = "bench.durable"
PARKED = "bench.parked"

FILL_SQL = f"""
INSERT INTO {sql.OUTBOX_TABLE}
    (channel, payload, sender_pid, state, attempts, created_at, available_at, last_error)
SELECT %s, json_build_object('id', i)::text, pg_backend_pid(), 'pending', 0, now(), now(), ''
FROM generate_series(1, %s) AS i
"""


@dataclass
class DurableSizes:
    throughput: int = 20_000
    backlog_small: int = 10_000
    backlog_large: int = 1_000_000
    drained: int = 10_000  # events drained from each backlog
    parked: int = 1_000_000
    claims: int = 50  # claim statements timed per case


QUICK = DurableSizes(
    throughput=500,
    backlog_small=1_000,
    backlog_large=20_000,
    drained=1_000,
    parked=20_000,
    claims=5,
)


def _empty() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {sql.OUTBOX_TABLE}")
        cursor.execute(f"VACUUM ANALYZE {sql.OUTBOX_TABLE}")


def _fill(channel: str, count: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(FILL_SQL, (channel, count))
        cursor.execute(f"VACUUM ANALYZE {sql.OUTBOX_TABLE}")


def throughput(processes: int, count: int, listener_class: Any) -> float:
    """Durable events per second, from storing them in one transaction to an empty outbox."""
    from django_pgpubsub import notify_many
    from django_pgpubsub.models import OutboxEvent

    _empty()
    listeners = [listener_class("library", CHANNEL, None) for _ in range(processes)]
    items = ((CHANNEL, f'{{"id":{i}}}') for i in range(count))
    started = time.perf_counter()
    with transaction.atomic():
        notify_many(items, durable=True)
    while OutboxEvent.objects.exists():
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    for listener in listeners:
        listener.process.send_signal(signal.SIGTERM)
        listener.finish()
    return count / elapsed


def drain_time_per_event(backlog: int, drained: int, listener_class: Any) -> float:
    """Microseconds per event for one listener to handle ``drained`` events of a
    ``backlog`` already pending (the listener starts after the rows are in)."""
    _empty()
    _fill(CHANNEL, backlog)
    listener = listener_class("library", CHANNEL, drained)
    started = time.perf_counter()  # it is listening: its first sweep starts now
    listener.finish()
    elapsed = time.perf_counter() - started
    _empty()
    return elapsed / drained * 1e6


def claim_ms(parked: int, claims: int) -> float:
    """Median milliseconds of one claim of 100 events of a handled channel,
    with ``parked`` pending rows on a channel no listener handles."""
    _empty()
    _fill(CHANNEL, 100 * claims)
    if parked:
        _fill(PARKED, parked)
    times = []
    with connection.cursor() as cursor:
        for _ in range(claims):
            params = {
                "channels": [CHANNEL],
                "limit": 100,
                "token": str(uuid.uuid4()),
                "lease": 60,
                "holder": None,
                "blocking": ["pending", "running"],
            }
            started = time.perf_counter()
            cursor.execute(sql.CLAIM_SQL, params)
            rows = cursor.fetchall()
            times.append(time.perf_counter() - started)
            assert len(rows) == 100, len(rows)
    _empty()
    return statistics.median(times) * 1000
