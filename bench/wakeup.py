"""Durable wake-ups by NOTIFY or by polling: latency and idle cost per listener.

* Latency: durable events sent one per committed transaction, a few
  milliseconds apart, from just before the commit to the handler's start.
* Idle cost: transactions per second while one listener waits with nothing
  to do (its keepalive, its sweeps and, in poll mode, its probes), from
  ``pg_stat_database`` of a database where it is the only client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import psycopg2
from django.test import override_settings

CHANNEL = "bench.dlatency"
PROBE_INTERVAL = 0.5

IDLE_DATABASE = "bench_idle"
IDLE_SQL = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"


def mode_env(mode: str) -> dict[str, str]:
    return {"BENCH_DURABLE_WAKEUP": mode, "BENCH_PROBE_INTERVAL": str(PROBE_INTERVAL)}


def latencies_ms(mode: str, count: int, pace: float, listener_class: Any) -> list[float]:
    """Milliseconds from sending each durable event to its handler's start."""
    from django_pgpubsub import notify

    listener = listener_class("library", CHANNEL, count, **mode_env(mode))
    with override_settings(PGPUBSUB={"DURABLE_WAKEUP": mode}):
        for _ in range(count):
            notify(CHANNEL, {"t": time.monotonic_ns()}, durable=True)
            time.sleep(pace)
    return [ns / 1e6 for ns in listener.finish()["latencies_ns"]]


def idle_per_second(mode: str, seconds: float, listener_class: Any) -> float:
    """Transactions per second of one idle listener, alone on a database of its own."""
    url = os.environ["DATABASE_URL"]
    idle_url = url.rsplit("/", 1)[0] + "/" + IDLE_DATABASE
    conn = psycopg2.connect(url)
    conn.autocommit = True
    listener = None
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {IDLE_DATABASE}")
            cursor.execute(f"CREATE DATABASE {IDLE_DATABASE}")
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "DATABASE_URL": idle_url,
            }
            subprocess.run(
                [sys.executable, "-m", "django", "migrate", "-v", "0"], env=env, check=True
            )
            listener = listener_class(
                "library", CHANNEL, None, DATABASE_URL=idle_url, **mode_env(mode)
            )
            time.sleep(1.0)  # past the start-up sweep
            cursor.execute(IDLE_SQL, (IDLE_DATABASE,))
            [(before,)] = cursor.fetchall()
            time.sleep(seconds)
            cursor.execute(IDLE_SQL, (IDLE_DATABASE,))
            [(after,)] = cursor.fetchall()
            listener.process.terminate()
            listener.finish()
            listener = None
            cursor.execute(f"DROP DATABASE {IDLE_DATABASE}")
    finally:
        if listener is not None:
            listener.process.kill()
        conn.close()
    return float(after - before) / seconds
