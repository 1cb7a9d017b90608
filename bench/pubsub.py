"""Handlers the library side of each benchmark runs in ``listen_events``.

Each records what it measures in memory and writes it to $BENCH_OUT at exit,
so measuring costs the hot path as little as it costs the raw loop.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any

from bench.models import WrittenRow
from django_pgpubsub import Event, handler

results: dict[str, Any] = {"latencies_ns": [], "rss": {}}
_seen = 0
_SAMPLE_AT = {10_000, int(os.environ.get("BENCH_LAST", "1000000"))}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@handler("bench.burst")
def burst(event: Event) -> None:
    event.data["id"]


@handler("bench.durable")
def durable(event: Event) -> None:
    event.data["id"]


@handler("bench.durable.write")
def durable_write(event: Event) -> None:
    """The writing durable handler: one row through the ORM."""
    WrittenRow(value=event.data["id"]).save()


@handler("bench.latency", "bench.dlatency")
def latency(event: Event) -> None:
    results["latencies_ns"].append(time.monotonic_ns() - event.data["t"])


@handler("bench.memory")
def memory(event: Event) -> None:
    global _seen  # noqa: PLW0603 - one counter, the cheapest way
    _seen += 1
    if _seen in _SAMPLE_AT:
        results["rss"][str(_seen)] = rss_bytes()


@atexit.register
def _write() -> None:
    out = os.environ.get("BENCH_OUT")
    if out:
        with open(out, "w") as file:
            json.dump(results, file)
