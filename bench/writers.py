"""What NOTIFY costs the writers: commit throughput of concurrent writers.

Every transaction that sends a NOTIFY takes a cluster-wide lock at commit and
(before PostgreSQL 19) signals every listening backend, whatever channel it
listens on. This bench measures what that does to writers that never listen:

* ``N`` writer processes (processes, not threads: no GIL between them), each
  a Django connection with ``synchronous_commit = off``, committing one
  INSERT per transaction as fast as they can for a fixed time;
* 0, 1 and 20 idle raw psycopg2 connections LISTENing on another channel;
* the columns: a plain INSERT (the reference); INSERT + ``notify()``; INSERT +
  ``notify(..., durable=True)`` in each durable wake-up mode; an ORM
  ``save()`` of an unpublished model; the same ``save()`` of a model under
  ``publish_on_save``.

Each column's figure is the median of alternating rounds (every column once
per round). Usage: ``python -m bench.writers [--quick]`` (DATABASE_URL), or
as part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import psycopg2

from django_pgpubsub.db.sql import OUTBOX_TABLE

IDLE_CHANNEL = "bench.idle"
LISTENING = (0, 1, 20)
TABLES = ("bench_written", "bench_published")


@dataclass(frozen=True)
class Column:
    """One kind of transaction; ``wakeup`` is a DURABLE_WAKEUP value, if any."""

    name: str
    step: str
    wakeup: str | None = None


def columns() -> list[Column]:
    """The columns, with one durable column per wake-up mode that exists."""
    from django_pgpubsub import conf

    declaration = conf.DECLARED.get("DURABLE_WAKEUP")
    if declaration is None:  # the NOTIFY wake-up is the only one
        durable = [Column("durable", "durable")]
    else:
        modes = getattr(declaration, "choices", None) or ("notify", "poll")
        durable = [Column(f"durable ({mode})", "durable", str(mode)) for mode in modes]
    return [
        Column("plain", "plain"),
        Column("notify()", "notify"),
        *durable,
        Column("save()", "save"),
        Column("publish_on_save", "publish"),
    ]


def _steps() -> dict[str, Callable[[Any, int], None]]:
    """What each column does inside its transaction (``cursor``, row number)."""
    from bench.models import PublishedRow, WrittenRow
    from django_pgpubsub import notify

    insert = "INSERT INTO bench_written (value) VALUES (%s)"

    def plain(cursor: Any, n: int) -> None:
        cursor.execute(insert, [n])

    def with_notify(cursor: Any, n: int) -> None:
        cursor.execute(insert, [n])
        notify("bench.writers", {"n": n})

    def durable(cursor: Any, n: int) -> None:
        cursor.execute(insert, [n])
        notify("bench.writers", {"n": n}, durable=True)

    return {
        "plain": plain,
        "notify": with_notify,
        "durable": durable,
        "save": lambda cursor, n: WrittenRow(value=n).save(),
        "publish": lambda cursor, n: PublishedRow(value=n).save(),
    }


def _wakeup(mode: str | None) -> AbstractContextManager[Any]:
    if mode is None:
        return nullcontext()
    from django.conf import settings
    from django.test import override_settings

    return override_settings(PGPUBSUB={**settings.PGPUBSUB, "DURABLE_WAKEUP": mode})


def _worker(pipe: Connection) -> None:
    """A writer process: set up once, then run the cells the parent sends."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.db import connection, transaction

    steps = _steps()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    pipe.send("ready")
    while (task := pipe.recv()) is not None:
        column, start, stop = task
        step, done = steps[column.step], 0
        with _wakeup(column.wakeup), connection.cursor() as cursor:
            time.sleep(max(0.0, start - time.monotonic()))  # every writer starts together
            while time.monotonic() < stop:
                with transaction.atomic():
                    step(cursor, done)
                done += 1
        pipe.send(done)
    connection.close()


@contextmanager
def writers(count: int) -> Iterator[list[Connection]]:
    """``count`` writer processes, ready; stopped on exit."""
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    try:
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child,), daemon=True)
            process.start()
            pipes.append(parent)
            processes.append(process)
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a writer process did not start")
        yield pipes
    finally:
        for pipe in pipes:
            pipe.send(None)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


@contextmanager
def idle_listeners(count: int) -> Iterator[None]:
    """``count`` raw connections LISTENing on a channel nobody sends to."""
    conns = []
    try:
        for _ in range(count):
            conn = psycopg2.connect(os.environ["DATABASE_URL"])
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'LISTEN "{IDLE_CHANNEL}"')
            conns.append(conn)
        yield
    finally:
        for conn in conns:
            conn.close()


def one_cell(pipes: list[Connection], column: Column, seconds: float) -> float:
    """Transactions per second of all writers together."""
    start = time.monotonic() + 0.05
    for pipe in pipes:
        pipe.send((column, start, start + seconds))
    done: int = sum(pipe.recv() for pipe in pipes)
    return done / seconds


def prepare() -> str:
    """Fresh tables, an empty outbox; the server's version."""
    with psycopg2.connect(os.environ["DATABASE_URL"]) as conn, conn.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, value integer)")
        cursor.execute(f"TRUNCATE {OUTBOX_TABLE}")
        cursor.execute("SHOW server_version")
        (version,) = cursor.fetchone() or ("?",)
    conn.close()
    return str(version).split(maxsplit=1)[0]


@dataclass
class Results:
    """Medians by listening connections, then column: transactions per second,
    and each round's ratio to the plain INSERTs of the same round (measured a
    second or two apart, so a shared machine's slow spells cancel out)."""

    writers: int
    seconds: float
    rounds: int
    server: str
    tps: dict[int, dict[str, float]] = field(default_factory=dict)
    ratio: dict[int, dict[str, float]] = field(default_factory=dict)


def measure(processes: int, seconds: float, rounds: int) -> Results:
    """Every column under 0, 1 and 20 idle listening connections."""
    results = Results(processes, seconds, rounds, prepare())
    chosen = columns()
    try:
        with writers(processes) as pipes:
            for listening in LISTENING:
                runs: dict[str, list[float]] = {column.name: [] for column in chosen}
                with idle_listeners(listening):
                    for _ in range(rounds):
                        for column in chosen:
                            runs[column.name].append(one_cell(pipes, column, seconds))
                plain = runs["plain"]
                results.tps[listening] = {name: statistics.median(v) for name, v in runs.items()}
                results.ratio[listening] = {
                    name: statistics.median(t / p for t, p in zip(v, plain, strict=True))
                    for name, v in runs.items()
                }
    finally:
        prepare()  # nobody handles the durable events written here: leave none behind
    return results


def table(results: Results) -> str:
    """The issue's table: plain transactions per second, the others as ratios."""
    names = list(results.tps[LISTENING[0]])
    widths = [max(len(name), 14) for name in names]
    lines = [
        f"writers: {results.writers} processes, one INSERT per transaction, "
        f"synchronous_commit=off, PostgreSQL {results.server}, "
        f"{results.seconds:g} s x {results.rounds} round(s) per cell; "
        "median tx/s (median ratio to plain in the same round)",
        "listening  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True)),
    ]
    for listening, row in results.tps.items():
        ratios = results.ratio[listening]
        cells = [f"{tps:,.0f} ({ratios[name]:.2f})" for name, tps in row.items()]
        joined = "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        lines.append(f"{listening:>9}  {joined}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 writers, short cells")
    parser.add_argument("--writers", type=int, default=8, help="writer processes (default 8)")
    parser.add_argument("--seconds", type=float, default=0.5, help="per cell (default 0.5)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)  # the outbox table
    if args.quick:
        args.writers, args.seconds, args.rounds = 2, 0.2, 1
    print(table(measure(args.writers, args.seconds, args.rounds)))


if __name__ == "__main__":
    main()
