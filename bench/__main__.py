"""Run the benchmarks: ``python -m bench [--quick] [--rounds N] [--json PATH]``.

Needs DATABASE_URL (``make bench`` starts a throwaway server). Every figure
is a ratio against a raw psycopg2 loop measured in the same run, on the same
server, in alternating rounds (raw, library, raw, library...), median of the
rounds. Nothing here is asserted: it prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from bench import durable, wakeup
from bench.layer import QUICK_LAYER, LayerSizes

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class WakeupSizes:
    latency: int = 200
    pace: float = 0.005
    idle_seconds: float = 5.0


@dataclass
class Sizes:
    burst: int = 200_000
    latency: int = 2_000
    latency_pace: float = 0.001
    notify: int = 1_000
    notify_many: int = 100_000
    memory: int = 1_000_000
    durable: durable.DurableSizes = field(default_factory=durable.DurableSizes)
    changes: int = 100_000
    wakeup: WakeupSizes = field(default_factory=WakeupSizes)
    writers: int = 8
    writer_seconds: float = 0.5
    writer_rounds: int = 5
    fanout_clients: int = 1_000
    fanout_rounds: int = 20
    async_burst: int = 200_000
    layer: LayerSizes = field(default_factory=LayerSizes)


QUICK = Sizes(
    burst=5_000,
    latency=100,
    latency_pace=0.001,
    notify=200,
    notify_many=5_000,
    memory=20_000,
    durable=durable.QUICK,
    changes=5_000,
    wakeup=WakeupSizes(latency=20, idle_seconds=1.0),
    writers=2,
    writer_seconds=0.2,
    writer_rounds=1,
    fanout_clients=50,
    fanout_rounds=3,
    async_burst=5_000,
    layer=QUICK_LAYER,
)


@dataclass
class Figure:
    name: str
    unit: str
    raw: float | None
    library: float
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.raw is None else self.library / self.raw


def child_env() -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Listener:
    """A listening subprocess, library or raw, that exits after ``count`` events."""

    def __init__(self, kind: str, channel: str, count: int | None, **extra_env: str) -> None:
        self.out = Path(tempfile.mkstemp(prefix="bench-", suffix=".json")[1])
        if kind == "raw":
            command = ["-m", "bench.raw_listener", channel, str(count), str(self.out)]
            ready = "ready"
        else:
            command = ["-m", "django", "listen_events", "--channel", channel, "-v", "0"]
            if count is not None:
                command += ["--max-events", str(count)]
            if kind == "metrics":  # the library with Prometheus metrics on
                command += ["--metrics-port", "0", "--metrics-address", "127.0.0.1"]
            ready = "Listening on"
        env = {**child_env(), "BENCH_OUT": str(self.out), **extra_env}
        self.process = subprocess.Popen(
            [sys.executable, *command], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if ready in line:
                return
        raise RuntimeError(f"{kind} listener exited {self.process.wait()} before listening")

    def finish(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        self.process.stdout.read()
        self.process.stdout.close()
        if self.process.wait(timeout=600):
            raise RuntimeError(f"listener exited {self.process.returncode}")
        results: dict[str, Any] = json.loads(self.out.read_text())
        self.out.unlink()
        return results


@contextmanager
def sender() -> Iterator[Any]:
    """An autocommit psycopg2 cursor. (``with conn:`` would open a transaction.)"""
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


BURST_SQL = (
    "SELECT count(pg_notify(%s, json_build_object('id', i)::text)) FROM generate_series(1, %s) i"
)


def throughput(kind: str, sizes: Sizes) -> float:
    """Events per second, from the burst's statement to the listener's exit."""
    listener = Listener(kind, "bench.burst", sizes.burst)
    with sender() as cursor:
        started = time.perf_counter()
        cursor.execute(BURST_SQL, ("bench.burst", sizes.burst))
        listener.finish()
        return sizes.burst / (time.perf_counter() - started)


def latencies(kind: str, sizes: Sizes) -> list[float]:
    """Microseconds from just before each autocommit NOTIFY to its handler's start."""
    listener = Listener(kind, "bench.latency", sizes.latency)
    with sender() as cursor:
        for _ in range(sizes.latency):
            payload = f'{{"t":{time.monotonic_ns()}}}'
            cursor.execute("SELECT pg_notify('bench.latency', %s)", (payload,))
            time.sleep(sizes.latency_pace)
    return [ns / 1000 for ns in listener.finish()["latencies_ns"]]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def per_call_notify(kind: str, sizes: Sizes) -> float:
    """Microseconds per notify() call inside a transaction, against one reused cursor.

    ``raw`` reuses the driver's cursor; ``django`` reuses a Django cursor
    (``connection.cursor()``): both on the same connection as notify().
    """
    from django.db import connection, transaction

    from django_pgpubsub import notify

    payloads = [str(i) for i in range(sizes.notify)]
    with transaction.atomic():
        started = time.perf_counter()
        if kind in ("raw", "django"):
            cursor = connection.connection.cursor() if kind == "raw" else connection.cursor()
            for payload in payloads:
                cursor.execute("SELECT pg_notify(%s, %s)", ("bench.notify", payload))
        else:
            for payload in payloads:
                notify("bench.notify", payload)
        elapsed = time.perf_counter() - started
    return elapsed / sizes.notify * 1e6


def notify_many_ms(kind: str, sizes: Sizes) -> float:
    """Milliseconds for notify_many() of N items, against one raw unnest statement."""
    from django.db import connection, transaction

    from django_pgpubsub import notify_many
    from django_pgpubsub.db.sql import NOTIFY_MANY_SQL

    items = [("bench.many", f'{{"id":{i}}}') for i in range(sizes.notify_many)]
    with transaction.atomic():
        started = time.perf_counter()
        if kind == "raw":
            channels = [channel for channel, _ in items]
            payloads = [payload for _, payload in items]
            with connection.connection.cursor() as cursor:
                cursor.execute(NOTIFY_MANY_SQL, (channels, payloads))
        else:
            notify_many(items)
        elapsed = time.perf_counter() - started
    return elapsed * 1000


def memory_growth_mb(sizes: Sizes) -> float:
    """Listener RSS after the last event minus RSS after 10,000 events, in MB."""
    listener = Listener("library", "bench.memory", sizes.memory, BENCH_LAST=str(sizes.memory))
    batch = 100_000
    with sender() as cursor:
        for start in range(0, sizes.memory, batch):
            cursor.execute(BURST_SQL, ("bench.memory", min(batch, sizes.memory - start)))
    rss = listener.finish()["rss"]
    return float(rss[str(sizes.memory)] - rss["10000"]) / 1e6


def alternate(
    rounds: int, measure: Callable[[str], Any], kinds: tuple[str, ...] = ("raw", "library")
) -> dict[str, list[Any]]:
    runs: dict[str, list[Any]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            runs[kind].append(measure(kind))
    return runs


GROUPS = ("wakeup", "dispatch", "durable", "triggers", "streams", "layer", "writers")


def run(sizes: Sizes, rounds: int, groups: tuple[str, ...] = GROUPS) -> list[Figure]:
    figures = []
    # First: its idle figure counts every transaction of the database, and
    # the later groups leave autovacuum work behind them.
    if "wakeup" in groups:
        figures.extend(wakeup_figures(sizes.wakeup))
    if "dispatch" in groups:
        figures.extend(dispatch_figures(sizes, rounds))
    if "durable" in groups:
        figures.extend(durable_figures(sizes.durable, rounds))
    if "triggers" in groups:
        figures.extend(trigger_figures(sizes, rounds))
    if "streams" in groups:
        figures.extend(stream_figures(sizes, rounds))
    if "layer" in groups:
        figures.extend(layer_figures(sizes))
    if "writers" in groups:
        figures.extend(writer_figures(sizes))  # last: it empties the outbox
    return figures


def dispatch_figures(sizes: Sizes, rounds: int) -> list[Figure]:
    """Plain events: dispatch, latency, notify(), notify_many(), memory."""
    figures = []
    kinds = ("raw", "library", "metrics")
    runs = alternate(rounds, lambda kind: throughput(kind, sizes), kinds)
    raw, lib = statistics.median(runs["raw"]), statistics.median(runs["library"])
    figures.append(Figure("dispatch throughput", "events/s", raw, lib, ">= 0.7", lib >= 0.7 * raw))
    met = statistics.median(runs["metrics"])
    figures.append(Figure("dispatch, metrics on", "events/s", raw, met, ">= 0.7", met >= 0.7 * raw))
    # What counting adds to each event: the difference of the time per event.
    figures.append(Figure("metrics cost per event", "µs", None, (1 / met - 1 / lib) * 1e6))

    runs = alternate(rounds, lambda kind: latencies(kind, sizes))
    for name, fraction, limit in (("p50", 0.5, 1.3), ("p99", 0.99, 2.0)):
        raw = statistics.median(percentile(r, fraction) for r in runs["raw"])
        lib = statistics.median(percentile(r, fraction) for r in runs["library"])
        figures.append(Figure(f"latency {name}", "µs", raw, lib, f"<= {limit}", lib <= limit * raw))

    kinds = ("raw", "django", "library")
    runs = alternate(rounds * 4, lambda kind: per_call_notify(kind, sizes), kinds)
    raw, django_cursor = statistics.median(runs["raw"]), statistics.median(runs["django"])
    lib = statistics.median(runs["library"])
    figures.append(
        Figure(
            "notify() vs Django cursor",
            "µs",
            django_cursor,
            lib,
            "<= 1.15",
            lib <= 1.15 * django_cursor,
        )
    )
    figures.append(
        Figure("notify() vs driver cursor", "µs", raw, lib, "<= 1.15", lib <= 1.15 * raw)
    )

    runs = alternate(rounds, lambda kind: notify_many_ms(kind, sizes))
    raw, lib = statistics.median(runs["raw"]), statistics.median(runs["library"])
    figures.append(
        Figure(f"notify_many({sizes.notify_many:,})", "ms", raw, lib, "<= 1.25", lib <= 1.25 * raw)
    )

    growth = memory_growth_mb(sizes)
    figures.append(
        Figure(f"RSS growth {sizes.memory:,} events", "MB", None, growth, "<= 5 MB", growth <= 5.0)
    )
    return figures


def wakeup_figures(sizes: WakeupSizes) -> list[Figure]:
    """Durable wake-ups by NOTIFY and by polling: latency, idle cost."""
    figures = []
    for mode in ("notify", "poll"):
        latencies = wakeup.latencies_ms(mode, sizes.latency, sizes.pace, Listener)
        for name, fraction in (("p50", 0.5), ("p99", 0.99)):
            value = percentile(latencies, fraction)
            figures.append(Figure(f"durable latency {name}, {mode}", "ms", None, value))
    for mode in ("notify", "poll"):
        rate = wakeup.idle_per_second(mode, sizes.idle_seconds, Listener)
        figures.append(Figure(f"idle listener, {mode}", "queries/s", None, rate))
    return figures


def stream_figures(sizes: Sizes, rounds: int) -> list[Figure]:
    """SSE fan-out against one connection per client; AsyncPubSub against psycopg 3."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return []  # the async API needs psycopg 3
    from bench import streams

    chosen = streams.StreamSizes(sizes.fanout_clients, sizes.fanout_rounds, sizes.async_burst)
    return [Figure(**figure) for figure in streams.stream_figures(chosen, rounds)]


def layer_figures(sizes: Sizes) -> list[Figure]:
    """The Channels layer: group_send over 4 processes, against channels_redis or in-memory."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return []  # the hub needs psycopg 3
    from bench import layer

    return [Figure(**figure) for figure in layer.layer_figures(sizes.layer)]


def durable_figures(sizes: durable.DurableSizes, rounds: int) -> list[Figure]:
    """Durable events: throughput with 1 and 2 listeners, backlog scaling, a parked channel."""
    one = [durable.throughput(1, sizes.throughput, Listener) for _ in range(rounds)]
    two = [durable.throughput(2, sizes.throughput, Listener) for _ in range(rounds)]
    rate1, rate2 = statistics.median(one), statistics.median(two)
    figures = [
        Figure("durable, 1 listener(s)", "events/s", None, rate1),
        Figure(
            "durable, 2 listener(s) vs 1", "events/s", rate1, rate2, ">= 1.6", rate2 >= 1.6 * rate1
        ),
    ]
    small = statistics.median(
        durable.drain_time_per_event(sizes.backlog_small, sizes.drained, Listener)
        for _ in range(rounds)
    )
    large = durable.drain_time_per_event(sizes.backlog_large, sizes.drained, Listener)
    figures.append(
        Figure(
            f"durable drain, {sizes.backlog_large:,} vs {sizes.backlog_small:,} backlog",
            "µs/event",
            small,
            large,
            "<= 1.3",
            large <= 1.3 * small,
        )
    )
    without = durable.claim_ms(0, sizes.claims)
    parked = durable.claim_ms(sizes.parked, sizes.claims)
    figures.append(
        Figure(
            f"durable claim, {sizes.parked:,} parked",
            "ms",
            without,
            parked,
            "<= 1.3",
            parked <= 1.3 * without,
        )
    )
    rounds_versus = max(1, (rounds + 1) // 2)
    for name, loop, library in durable.versus_loop(
        os.environ["DATABASE_URL"], sizes.versus, rounds_versus, Listener
    ):
        # The goal of group commit: 1.5 times the loop, where commits cost.
        target = ">= 1.5" if name.endswith("writes a row, fsync on") else ""
        met = library >= 1.5 * loop if target else None
        figures.append(Figure(name, "events/s", loop, library, target, met))
    return figures


def trigger_figures(sizes: Sizes, rounds: int) -> list[Figure]:
    """One UPDATE of every row: no trigger, publish_changes, a row-level pg_notify."""
    from bench import triggers

    results = triggers.measure(sizes.changes, rounds)
    plain = results.update_ms["bench_plain"]
    ours, row = results.update_ms["bench_statement"], results.update_ms["bench_row"]
    n = f"{sizes.changes:,}"
    return [
        Figure(f"UPDATE {n}, statement trigger", "ms", plain, ours, "<= 1.3", ours <= 1.3 * plain),
        Figure(f"UPDATE {n}, row trigger", "ms", plain, row),
        Figure(f"{n} keys received, statement", "ms", None, results.received_ms["bench_statement"]),
        Figure(f"{n} keys received, row", "ms", None, results.received_ms["bench_row"]),
    ]


def writer_figures(sizes: Sizes) -> list[Figure]:
    """Writers' transactions per second, each column against plain INSERTs.

    Last, as it empties the outbox; its own rounds (many short cells average
    out a shared machine's bursts better than a few long ones).
    """
    from bench import writers

    results = writers.measure(sizes.writers, sizes.writer_seconds, sizes.writer_rounds)
    print(writers.table(results))
    figures = []
    for listening, row in results.tps.items():
        for name, tps in row.items():
            # raw * ratio: the reference whose ratio is the per-round median.
            plain = None if name == "plain" else tps / results.ratio[listening][name]
            figures.append(Figure(f"writers, {listening} listening: {name}", "tx/s", plain, tps))
    return figures


def table(figures: list[Figure], driver: str) -> str:
    lines = [
        f"driver: {driver}; raw loop: psycopg2",
        f"{'benchmark':<30} {'unit':>8} {'raw':>12} {'library':>12} {'ratio':>7}  target    met",
    ]
    for f in figures:
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}"
        raw = "" if f.raw is None else f"{f.raw:,.1f}"
        met = {None: "", True: "yes", False: "NO"}[f.met]
        lines.append(
            f"{f.name:<30} {f.unit:>8} {raw:>12} {f.library:>12,.1f} {ratio:>7}  "
            f"{f.target:<9} {met}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--json", type=Path, help="where to write the figures")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run, of {', '.join(GROUPS)} (default: all)",
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    driver = "psycopg 3" if is_psycopg3 else "psycopg2"
    sizes = QUICK if args.quick else Sizes()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)  # the outbox table, for durable events
    figures = run(sizes, args.rounds, tuple(args.only.split(",")))
    print(table(figures, driver))
    out = args.json or ROOT / "bench" / f"results-{driver.replace(' ', '')}.json"
    out.write_text(
        json.dumps(
            {
                "driver": driver,
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "sizes": asdict(sizes),
                "rounds": args.rounds,
                "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
            },
            indent=2,
        )
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
