"""The cost of ``publish_changes``: one UPDATE of many rows under three tables.

* ``bench_plain``: no trigger (the reference);
* ``bench_statement``: our statement-level triggers, compiled by
  django-pgtrigger exactly as a migration installs them;
* ``bench_row``: a row-level trigger that sends one ``pg_notify`` per row
  (the peers' design, reduced to the key: the cheapest row-level variant).

Each round times ``UPDATE ... SET value = value + 1`` of every row, commit
included, and the time until a raw psycopg2 listener holds every changed key.
"""

from __future__ import annotations

import json
import os
import select
import time
from dataclasses import dataclass
from typing import Any

import psycopg2

from django_pgpubsub.publishing.changes import build_triggers
from django_pgpubsub.publishing.published_models import EVENTS
from django_pgpubsub.publishing.triggers import Publication

TABLES = ("bench_plain", "bench_statement", "bench_row")
ROW_TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION bench_row_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('bench.row', json_build_object(
        'event', 'updated', 'model', 'bench.row', 'pk', NEW.id)::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER bench_row_notify AFTER UPDATE ON bench_row
    FOR EACH ROW EXECUTE FUNCTION bench_row_notify();
"""
CHANNELS = {"bench_statement": "bench.statement", "bench_row": "bench.row"}


def setup(cursor: Any, rows: int) -> None:
    """Three identical tables of ``rows`` rows; triggers on two of them."""
    from bench.models import ChangedRow

    for table in TABLES:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, value integer NOT NULL)")
        cursor.execute(f"INSERT INTO {table} (value) SELECT 0 FROM generate_series(1, %s)", (rows,))
    publication = Publication(ChangedRow, "bench.statement", frozenset(EVENTS), None, False)
    for trigger in build_triggers(publication):
        # django-pgtrigger annotates the model class as an instance.
        cursor.execute(str(trigger.compile(ChangedRow).install_sql))  # type: ignore[arg-type]
    cursor.execute(ROW_TRIGGER_SQL)


def received_keys(payload: str) -> int:
    data = json.loads(payload)
    return len(data["pks"]) if "pks" in data else 1


def one_update(table: str, rows: int) -> tuple[float, float | None]:
    """Milliseconds for the UPDATE with its commit, and until a listener has every key."""
    url = os.environ["DATABASE_URL"]
    listener = psycopg2.connect(url)
    listener.autocommit = True
    sender = psycopg2.connect(url)
    try:
        with listener.cursor() as cursor:
            cursor.execute(f"VACUUM {table}")  # every round starts from the same table
            if table in CHANNELS:
                cursor.execute(f'LISTEN "{CHANNELS[table]}"')
        with sender.cursor() as cursor:
            started = time.perf_counter()
            cursor.execute(f"UPDATE {table} SET value = value + 1")
            sender.commit()
            committed = time.perf_counter()
        if table not in CHANNELS:
            return (committed - started) * 1000, None
        seen = 0
        while seen < rows:
            if not select.select([listener], [], [], 30)[0]:
                raise RuntimeError(f"{table}: {seen} of {rows} keys after 30 s")
            listener.poll()
            seen += sum(received_keys(n.payload) for n in listener.notifies)
            listener.notifies.clear()
        return (committed - started) * 1000, (time.perf_counter() - started) * 1000
    finally:
        listener.close()
        sender.close()


@dataclass
class Results:
    """Best times of the rounds in milliseconds, by table.

    The best, not the median (as timeit does): one statement of a few hundred
    milliseconds on a shared machine is slowed by whatever else runs, and the
    slowest rounds measure the neighbours, not the trigger.
    """

    update_ms: dict[str, float]
    received_ms: dict[str, float]


def measure(rows: int, rounds: int) -> Results:
    """Alternating rounds over the three tables; the best of each."""
    with psycopg2.connect(os.environ["DATABASE_URL"]) as conn, conn.cursor() as cursor:
        setup(cursor, rows)
    conn.close()
    runs: dict[str, list[tuple[float, float | None]]] = {table: [] for table in TABLES}
    for _ in range(rounds):
        for table in TABLES:
            runs[table].append(one_update(table, rows))
    results = Results({}, {})
    for table, values in runs.items():
        results.update_ms[table] = min(u for u, _ in values)
        received = [r for _, r in values if r is not None]
        if received:
            results.received_ms[table] = min(received)
    return results
