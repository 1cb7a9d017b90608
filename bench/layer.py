"""The Channels layer: ``group_send`` to 1, 100 and 10,000 members spread over
4 processes, against channels_redis's pub/sub layer when a ``redis-server``
can be started, else against the in-memory layer (one process).

``python scripts/pgtemp.py python -m bench.layer [--sends N]``. Prints, for
each layer and group size: delivery latency p50/p99 (from the send to each
member's ``receive()``), NOTIFYs per ``group_send`` and the processes'
listening connections. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import subprocess
import time
from typing import Any

PROCESSES = 4
GROUP = "bench"


def _layer(backend: str, redis_url: str) -> Any:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    if backend == "redis":
        from channels_redis.pubsub import RedisPubSubChannelLayer

        return RedisPubSubChannelLayer(hosts=[redis_url])
    if backend == "memory":
        from channels.layers import InMemoryChannelLayer

        return InMemoryChannelLayer(capacity=1000)
    from django_pgpubsub.layers import PubSubChannelLayer

    return PubSubChannelLayer(using="default")


async def _members(layer: Any, count: int, sends: int, ready: Any) -> list[float]:
    channels = [await layer.new_channel() for _ in range(count)]
    for channel in channels:
        await layer.group_add(GROUP, channel)
    ready.put(count)
    latencies: list[float] = []

    async def member(channel: str) -> None:
        for _ in range(sends):
            message = await layer.receive(channel)
            latencies.append(time.time() - message["t"])

    await asyncio.gather(*(member(channel) for channel in channels))
    return latencies


def _member_process(  # noqa: PLR0917 - a Process target takes positional args
    backend: str, redis_url: str, count: int, sends: int, ready: Any, results: Any
) -> None:
    layer = _layer(backend, redis_url)
    results.put(asyncio.run(_members(layer, count, sends, ready)))


def _listening(url: str) -> int:
    """The member processes' hub connections (not this sending process's own)."""
    import psycopg

    from django_pgpubsub.streams.hub import get_hub

    own = get_hub("default").connection
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'django_pgpubsub hub' AND pid <> %s",
            [own.pid if own is not None else 0],
        ).fetchone()
        return int(row[0]) if row else 0


def run(backend: str, members: int, sends: int, redis_url: str = "") -> dict[str, Any]:
    """Members over 4 processes (1 for the in-memory layer), ``sends`` group_sends."""
    url = os.environ["DATABASE_URL"]
    processes = 1 if backend == "memory" else min(PROCESSES, members)
    if backend == "memory":
        layer = _layer(backend, redis_url)

        async def together() -> list[float]:
            queue: Any = multiprocessing.Queue()
            task = asyncio.ensure_future(_members(layer, members, sends, queue))
            while queue.empty():
                await asyncio.sleep(0.01)
            for _ in range(sends):
                await layer.group_send(GROUP, {"type": "m", "t": time.time()})
                await asyncio.sleep(0.02)
            return await task

        latencies = asyncio.run(together())
        return _figures(backend, members, latencies, notifies=None, listening=None)
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    shares = [members // processes + (n < members % processes) for n in range(processes)]
    workers = [
        context.Process(
            target=_member_process, args=(backend, redis_url, share, sends, ready, results)
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=300)
    listening = _listening(url) if backend == "pgpubsub" else None
    import psycopg

    from django_pgpubsub.streams.messages import pg_channel

    spy = psycopg.connect(url, autocommit=True)
    spy.execute(f'LISTEN "{pg_channel("asgi", "g", GROUP)}"')
    sender = _layer(backend, redis_url)

    async def send_all() -> None:
        for _ in range(sends):
            await sender.group_send(GROUP, {"type": "m", "t": time.time()})
            await asyncio.sleep(0.05)

    asyncio.run(send_all())
    latencies = [value for _ in workers for value in results.get(timeout=300)]
    for worker in workers:
        worker.join(30)
    notifies = len(list(spy.notifies(timeout=0.5))) if backend == "pgpubsub" else None
    spy.close()
    return _figures(backend, members, latencies, notifies=notifies, listening=listening)


def _figures(
    backend: str, members: int, latencies: list[float], *, notifies: int | None, listening: Any
) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "layer": backend,
        "members": members,
        "deliveries": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
        "notifies": notifies,
        "listening": listening,
    }


def start_redis() -> tuple[subprocess.Popen[bytes] | None, str]:
    """A throwaway redis-server, if one is installed."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        return None, ""
    from scripts.pgtemp import free_port

    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return server, f"redis://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sends", type=int, default=20)
    parser.add_argument("--members", default="1,100,10000")
    args = parser.parse_args()
    redis, redis_url = start_redis()
    other = "redis" if redis is not None else "memory"
    try:
        for members in (int(m) for m in args.members.split(",")):
            for backend in ("pgpubsub", other):
                figures = run(backend, members, args.sends, redis_url)
                print(figures, flush=True)
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    main()
