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

from django_pgpubsub.db import claim_sql, sql

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
    versus: int = 5_000  # events per round against the one-transaction-per-event loop


QUICK = DurableSizes(
    throughput=500,
    backlog_small=1_000,
    backlog_large=20_000,
    drained=1_000,
    parked=20_000,
    claims=5,
    versus=200,
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
                "only": None,
            }
            started = time.perf_counter()
            cursor.execute(claim_sql.CLAIM_SQL, params)
            rows = cursor.fetchall()
            times.append(time.perf_counter() - started)
            assert len(rows) == 100, len(rows)
    _empty()
    return statistics.median(times) * 1000


# -- one listener against the one-transaction-per-event loop, on two servers --

WRITE_CHANNEL = "bench.durable.write"
WRITTEN_TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS bench_written (id bigserial PRIMARY KEY, value integer)"
)
# The stored events and their wake-up, as notify_many(durable=True) sends them.
STORE_SQL = f"""
WITH stored AS (
    INSERT INTO {sql.OUTBOX_TABLE}
        (channel, payload, sender_pid, state, attempts, created_at, available_at, last_error)
    SELECT %s, json_build_object('id', i)::text, pg_backend_pid(), 'pending', 0, now(), now(), ''
    FROM generate_series(1, %s) AS i
    RETURNING channel
)
SELECT count(*), pg_notify('{sql.WAKEUP_CHANNEL}', min(channel)) FROM stored
"""

SERVERS = ("fsync off", "fsync on")  # the tests' fast server; PostgreSQL's defaults


def prepare_server(url: str, env: dict[str, str]) -> None:
    """Migrate the server at ``url`` and make the written table."""
    import subprocess
    import sys

    import psycopg2

    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v", "0"],
        env={**env, "DATABASE_URL": url},
        check=True,
    )
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(WRITTEN_TABLE_SQL)
    conn.close()


class Loop:
    """bench.durable_loop in a subprocess: the one-transaction-per-event loop."""

    def __init__(self, url: str, channel: str, count: int, env: dict[str, str]) -> None:
        import subprocess
        import sys

        write = "write" if channel == WRITE_CHANNEL else "trivial"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.durable_loop", channel, str(count), write],
            env={**env, "DATABASE_URL": url},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the loop exited {self.process.wait()} before it was ready")

    def finish(self) -> None:
        if self.process.wait(timeout=600):
            raise RuntimeError(f"the loop exited {self.process.returncode}")


def drain_rate(url: str, kind: str, channel: str, count: int, listener_class: Any) -> float:
    """Events per second for one ``kind`` ("loop" or "library") to handle ``count``
    events stored at once on the server at ``url``, from their commit to an
    empty outbox."""
    import psycopg2

    from bench.__main__ import child_env

    env = child_env()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"TRUNCATE {sql.OUTBOX_TABLE}, bench_written")
            cursor.execute(f"VACUUM ANALYZE {sql.OUTBOX_TABLE}")
            consumer: Any = (
                Loop(url, channel, count, env)
                if kind == "loop"
                else listener_class("library", channel, None, DATABASE_URL=url)
            )
            started = time.perf_counter()
            cursor.execute(STORE_SQL, (channel, count))
            while True:
                cursor.execute(f"SELECT EXISTS (SELECT FROM {sql.OUTBOX_TABLE})")
                [(pending,)] = cursor.fetchall()
                if not pending:
                    break
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
            if kind != "loop":
                consumer.process.send_signal(signal.SIGTERM)
            consumer.finish()
            cursor.execute("SELECT count(*) FROM bench_written")
            [(written,)] = cursor.fetchall()
            expected = count if channel == WRITE_CHANNEL else 0
            assert written == expected, (kind, channel, written, expected)
    finally:
        conn.close()
    return count / elapsed


def versus_loop(
    fast_url: str, count: int, rounds: int, listener_class: Any
) -> list[tuple[str, float, float]]:
    """One listener against the one-transaction-per-event loop, with a trivial
    handler and with one that writes a row, on the fast server (``fast_url``)
    and on a throwaway one with PostgreSQL's default durability; alternating
    rounds, medians.

    Returns:
        ``(name, loop's events/s, library's events/s)`` per case.
    """
    from bench.__main__ import child_env
    from scripts.pgtemp import TemporaryPostgres

    results = []
    with TemporaryPostgres(durable=True) as durable_server:
        urls = dict(zip(SERVERS, (fast_url, durable_server.url), strict=True))
        for label, url in urls.items():
            prepare_server(url, child_env())
            for channel, what in ((CHANNEL, "trivial"), (WRITE_CHANNEL, "writes a row")):
                runs: dict[str, list[float]] = {"loop": [], "library": []}
                for _ in range(rounds):
                    for kind, rates in runs.items():
                        rates.append(drain_rate(url, kind, channel, count, listener_class))
                loop, library = (statistics.median(runs[kind]) for kind in ("loop", "library"))
                results.append((f"durable {what}, {label}", loop, library))
    return results
