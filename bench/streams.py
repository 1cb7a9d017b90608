"""Async benchmarks: SSE fan-out through the hub against one LISTEN connection
per client (the naive design), and ``AsyncPubSub.events()`` against a raw
psycopg 3 async loop.

``python -m bench --only streams`` runs only these (``make bench BENCH_ARGS=...``).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from scripts.pgtemp import free_port

ROOT = Path(__file__).resolve().parent.parent

BURST_SQL = (
    "SELECT count(pg_notify(%s, json_build_object('id', i)::text)) FROM generate_series(1, %s) i"
)


@dataclass
class StreamSizes:
    clients: int = 1_000
    rounds: int = 20
    burst: int = 200_000


QUICK_STREAMS = StreamSizes(clients=50, rounds=3, burst=5_000)


def url() -> str:
    return os.environ["DATABASE_URL"]


def figure(
    name: str, unit: str, raw: float | None, library: float, *, target: str = ""
) -> dict[str, Any]:
    """What ``bench.__main__.Figure`` takes; ``met`` when a target is given."""
    met = None
    if target:
        met = library >= float(target.rsplit(maxsplit=1)[-1]) * (raw or 0)
    return {
        "name": name,
        "unit": unit,
        "raw": raw,
        "library": library,
        "target": target,
        "met": met,
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def child_env() -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# --- AsyncPubSub.events() against a raw psycopg 3 async loop ------------------


async def _async_burst(kind: str, count: int) -> float:
    """Events per second: the burst's statement until the last event was handled."""
    from django_pgpubsub import aconnect

    async with await psycopg.AsyncConnection.connect(url(), autocommit=True) as sender:
        loads = json.loads
        seen = 0
        if kind == "raw":
            conn = await psycopg.AsyncConnection.connect(url(), autocommit=True)
            await conn.execute('LISTEN "bench.aio"')
            started = time.perf_counter()
            await sender.execute(BURST_SQL, ("bench.aio", count))
            async for notify in conn.notifies():
                loads(notify.payload)["id"]
                seen += 1
                if seen == count:
                    break
            await conn.close()
        else:
            pubsub = await aconnect()
            await pubsub.listen("bench.aio")
            started = time.perf_counter()
            await sender.execute(BURST_SQL, ("bench.aio", count))
            async for event in pubsub.events():
                event.data["id"]
                seen += 1
                if seen == count:
                    break
            await pubsub.close()
        return count / (time.perf_counter() - started)


def async_figures(sizes: StreamSizes, rounds: int) -> list[dict[str, Any]]:
    runs: dict[str, list[float]] = {"raw": [], "library": []}
    for _ in range(rounds):
        for kind, rates in runs.items():
            rates.append(asyncio.run(_async_burst(kind, sizes.burst)))
    raw, lib = statistics.median(runs["raw"]), statistics.median(runs["library"])
    name = "AsyncPubSub vs psycopg3 loop"
    return [figure(name, "events/s", raw, lib, target=">= 0.8")]


# --- fan-out: 1,000 SSE clients on one uvicorn worker ---------------------------


class Server:
    """uvicorn serving bench.asgi, one worker."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "bench.asgi:application"),
                *("--host", "127.0.0.1", "--port", str(self.port)),
                *("--lifespan", "off", "--log-level", "warning", "--backlog", "4096"),
            ],
            cwd=ROOT,
            env=child_env(),
        )

    async def wait_up(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def rss_kb(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Client:
    """One SSE client on a raw socket (light, so that 1,000 fit in this process)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /events/ HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode())
        return cls(reader, writer)

    async def until(self, marker: bytes) -> float:
        """Read until ``marker``; return when it arrived."""
        buffer = b""
        while marker not in buffer:
            buffer = buffer[-len(marker) :] + await self.reader.read(65536)
        return time.perf_counter()

    def close(self) -> None:
        self.writer.close()


async def _library_connections(server_pid: int | None = None) -> int:
    async with await psycopg.AsyncConnection.connect(url(), autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'django_pgpubsub%%'"
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


async def _fanout(sizes: StreamSizes, count: int) -> dict[str, Any]:
    server = Server()
    try:
        await server.wait_up()
        base_rss = server.rss_kb()
        clients: list[Client] = []
        for start in range(0, count, 100):  # in waves: the accept backlog
            wave = min(100, count - start)
            clients += await asyncio.gather(*(Client.connect(server.port) for _ in range(wave)))
        await asyncio.sleep(0.5)  # let the server settle before measuring memory
        per_client_kb = (server.rss_kb() - base_rss) / count
        connections = await _library_connections()
        lasts: list[float] = []
        async with await psycopg.AsyncConnection.connect(url(), autocommit=True) as sender:
            for n in range(sizes.rounds):
                marker = f"round-{n}-end".encode()
                waiting = [asyncio.ensure_future(c.until(marker)) for c in clients]
                await asyncio.sleep(0.05)  # every reader is waiting
                started = time.perf_counter()
                await sender.execute("SELECT pg_notify('bench.fanout', %s)", (marker.decode(),))
                arrived = await asyncio.gather(*waiting)
                lasts.append((max(arrived) - started) * 1000)
        for client in clients:
            client.close()
        return {"lasts_ms": lasts, "per_client_kb": per_client_kb, "connections": connections}
    finally:
        server.stop()


async def _naive(sizes: StreamSizes) -> dict[str, Any]:
    """One LISTEN connection per client, as many as the server allows."""
    conns: list[psycopg.AsyncConnection[Any]] = []
    try:
        while len(conns) < sizes.clients:
            try:
                conn = await psycopg.AsyncConnection.connect(url(), autocommit=True)
            except psycopg.OperationalError:
                break  # too many clients: the server's limit is reached
            await conn.execute('LISTEN "bench.fanout"')
            conns.append(conn)
        # Leave a few connections free for the sender.
        for conn in conns[-3:]:
            await conn.close()
        conns = conns[:-3]

        async def receive(conn: psycopg.AsyncConnection[Any], marker: str) -> float:
            async for notify in conn.notifies():
                if notify.payload == marker:
                    return time.perf_counter()
            raise RuntimeError("unreachable")

        lasts: list[float] = []
        async with await psycopg.AsyncConnection.connect(url(), autocommit=True) as sender:
            for n in range(sizes.rounds):
                marker = f"naive-{n}"
                waiting = [asyncio.ensure_future(receive(c, marker)) for c in conns]
                await asyncio.sleep(0.05)
                started = time.perf_counter()
                await sender.execute("SELECT pg_notify('bench.fanout', %s)", (marker,))
                arrived = await asyncio.gather(*waiting)
                lasts.append((max(arrived) - started) * 1000)
        return {"lasts_ms": lasts, "connections": len(conns)}
    finally:
        for conn in conns:
            await conn.close()


def fanout_figures(sizes: StreamSizes) -> list[dict[str, Any]]:
    """The hub with ``clients`` SSE clients, and with as many as the naive design
    reached; the naive design measured to its LISTEN connections only (its
    lower bound: a real one would stream SSE on top)."""
    naive = asyncio.run(_naive(sizes))
    n, m = sizes.clients, naive["connections"]
    hub = asyncio.run(_fanout(sizes, n))
    same = asyncio.run(_fanout(sizes, m))
    figures = [
        figure(f"SSE fan-out {n:,}: PG conns", "conns", None, hub["connections"]),
        figure(f"naive {m} clients: PG conns", "conns", None, m),
        figure(f"SSE fan-out {n:,}: memory", "KB/client", None, hub["per_client_kb"]),
    ]
    for name, fraction in (("p50", 0.5), ("p99", 0.99)):
        ours = percentile(hub["lasts_ms"], fraction)
        figures.append(figure(f"SSE fan-out {n:,}: last {name}", "ms", None, ours))
    for name, fraction in (("p50", 0.5), ("p99", 0.99)):
        ours = percentile(same["lasts_ms"], fraction)
        theirs = percentile(naive["lasts_ms"], fraction)
        figures.append(figure(f"SSE {m} vs naive {m}: last {name}", "ms", theirs, ours))
    return figures


def stream_figures(sizes: StreamSizes, rounds: int) -> list[dict[str, Any]]:
    return async_figures(sizes, rounds) + fanout_figures(sizes)
