"""bench/ runs (a smoke test with small sizes; nothing about speed is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import layer
from bench.writers import LISTENING, columns
from tests.helpers import ROOT

pytestmark = pytest.mark.bench


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` from the project root, as ``make bench`` runs it; must succeed."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_bench_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = run_bench("bench", "--quick", "--rounds", "1", "--json", str(out))
    names = [figure["name"] for figure in json.loads(out.read_text())["figures"]]
    assert names == [
        "durable latency p50, notify",
        "durable latency p99, notify",
        "durable latency p50, poll",
        "durable latency p99, poll",
        "idle listener, notify",
        "idle listener, poll",
        "dispatch throughput",
        "dispatch, metrics on",
        "metrics cost per event",
        "latency p50",
        "latency p99",
        "notify() vs Django cursor",
        "notify() vs driver cursor",
        "notify_many(5,000)",
        "RSS growth 20,000 events",
        "durable, 1 listener(s)",
        "durable, 2 listener(s) vs 1",
        "durable drain, 20,000 vs 1,000 backlog",
        "durable claim, 20,000 parked",
        "durable trivial, fsync off",
        "durable writes a row, fsync off",
        "durable trivial, fsync on",
        "durable writes a row, fsync on",
        "ordering, no keys, 4 listeners",
        "ordering, 1 key(s) vs none",
        "ordering, 10 key(s) vs none",
        "ordering, 1,000 key(s) vs none",
        "ordering, busiest share, no keys",
        "ordering, busiest share, 1 key(s)",
        "ordering, busiest share, 10 key(s)",
        "ordering, busiest share, 1,000 key(s)",
        "storing keyed events, 4 writers, distinct keys vs no key",
        "storing keyed events, 4 writers, one key vs no key",
        "ordering claim, 2,000 pending, no keys",
        "ordering claim, 2,000 pending, 1 key(s)",
        "ordering claim, 2,000 pending, 10 key(s)",
        "ordering claim, 2,000 pending, 1,000 key(s)",
        "UPDATE 5,000, statement trigger",
        "UPDATE 5,000, row trigger",
        "5,000 keys received, statement",
        "5,000 keys received, row",
        "AsyncPubSub vs psycopg3 loop",
        "SSE fan-out 50: PG conns",
        "naive 47 clients: PG conns",
        "SSE fan-out 50: memory",
        "SSE fan-out 50: last p50",
        "SSE fan-out 50: last p99",
        "SSE 47 vs naive 47: last p50",
        "SSE 47 vs naive 47: last p99",
        *(
            f"layer {members}: {name}"
            for members in (1, 100)
            for name in (
                f"p50 vs {layer.reference()}",
                f"p99 vs {layer.reference()}",
                "NOTIFYs/send",
                "listening",
            )
        ),
        "layer 2-process round trip vs psycopg",
        *(["layer 2-process round trip vs redis"] if layer.reference() == "redis" else []),
        "layer round trip vs memory",
        "layer fan-out 100 vs memory",
    ] + [
        f"writers, {listening} listening: {column.name}"
        for listening in LISTENING
        for column in columns()  # one durable column per wake-up mode
    ]
    assert "dispatch throughput" in result.stdout
    figures = {figure["name"]: figure for figure in json.loads(out.read_text())["figures"]}
    for members in (1, 100):  # what must hold whatever the machine
        assert figures[f"layer {members}: NOTIFYs/send"]["library"] == 1
        assert figures[f"layer {members}: listening"]["library"] == min(members, 4)
    assert "writers: 2 processes" in result.stdout


def test_bench_against_a_commit_reports_both_rates_and_their_ratio_per_case() -> None:
    # HEAD against this tree: the worktree, a fresh server per side and case
    # (fsync off, then PostgreSQL's default durability), both rates, a ratio.
    result = run_bench("bench.against", "HEAD", "--runs", "1", "--rounds", "1", "--events", "200")
    *_, header, trivial_off, writes_on, trivial_on = result.stdout.splitlines()
    assert header == "durable, 1 listener, medians of 1 x 1 rounds (events/s):"
    for line, title in (
        (trivial_off, "trivial handler, fsync off, 200 events"),
        (writes_on, "writes a row, fsync on, 200 events"),
        (trivial_on, "trivial handler, fsync on, 200 events"),
    ):
        assert line.startswith(f"{title}: HEAD "), line
        ratio = float(line.rpartition(", ratio ")[2])
        assert 0.2 < ratio < 5  # any machine, however noisy
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "pgpubsub-against-" not in worktrees.stdout  # removed


def test_bench_against_runs_only_the_cases_asked_for() -> None:
    result = run_bench(
        "bench.against", "HEAD", "--runs", "1", "--rounds", "1", "--events", "200",
        "--case", "writes-fsync-off", "--case", "trivial-fsync-off",
    )  # fmt: skip
    *_, header, writes_off, trivial_off = result.stdout.splitlines()
    assert header.startswith("durable, 1 listener, medians"), header
    assert writes_off.startswith("writes a row, fsync off, 200 events: HEAD "), writes_off
    assert trivial_off.startswith("trivial handler, fsync off, 200 events: HEAD "), trivial_off
    assert "fsync on" not in result.stdout
