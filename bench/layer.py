"""The Channels layer: ``group_send`` to 1, 100 and 10,000 members spread over
4 processes, against channels_redis's pub/sub layer when it is installed and a
``redis-server`` can be started, else against the in-memory layer (its
members in one process); the per-message cost in one process against the
in-memory layer; and a round trip between two processes (a ``send()`` to a
channel of the other, which sends a message back) against two bare psycopg
connections and channels_redis.

``python -m bench --only layer`` (``make bench BENCH_ARGS="--only layer"``), or
on its own: ``python scripts/pgtemp.py python -m bench.layer``.

Latency is from just before ``group_send`` to each member's ``receive()``. The
next ``group_send`` waits until every member has the previous one: each figure
is the latency of one ``group_send`` on an otherwise idle machine, not of a
sustained rate. The sender's connection is opened before the first one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import multiprocessing
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PROCESSES = 4
GROUP = "bench"


@dataclass
class LayerSizes:
    members: tuple[int, ...] = (1, 100, 10_000)
    sends: int = 10  # group_sends per member count
    round_trips: int = 2_000  # send/receive on one process
    cross_trips: int = 1_000  # send to another process and its reply
    local_members: int = 1_000  # group_send fan-out inside one process


QUICK_LAYER = LayerSizes(
    members=(1, 100), sends=3, round_trips=100, cross_trips=100, local_members=100
)


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


async def _members(layer: Any, count: int, sends: int, ready: Any, acks: Any) -> list[float]:
    """``count`` members; ``acks`` gets the round number once all of them have it."""
    channels = [await layer.new_channel() for _ in range(count)]
    for channel in channels:
        await layer.group_add(GROUP, channel)
    ready.put(count)
    latencies: list[float] = []
    received = [0] * sends

    async def member(channel: str) -> None:
        for _ in range(sends):
            message = await layer.receive(channel)
            latencies.append(time.time() - message["t"])
            n = message["n"]
            received[n] += 1
            if received[n] == count:
                acks.put(n)

    await asyncio.gather(*(member(channel) for channel in channels))
    return latencies


def _member_process(  # noqa: PLR0917 - a Process target takes positional args
    backend: str, redis_url: str, count: int, sends: int, ready: Any, acks: Any, results: Any
) -> None:
    layer = _layer(backend, redis_url)
    results.put(asyncio.run(_members(layer, count, sends, ready, acks)))


def _listening(url: str) -> int:
    """The member processes' hub connections (not this sending process's own)."""
    import psycopg

    from django_pgpubsub.hub.hub import get_hub

    own = get_hub("default").connection
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'django_pgpubsub hub' AND pid <> %s",
            [own.pid if own is not None else 0],
        ).fetchone()
        return int(row[0]) if row else 0


def group_latency(backend: str, members: int, sends: int, redis_url: str = "") -> dict[str, Any]:
    """``sends`` group_sends to ``members`` over 4 processes (one for the in-memory layer)."""
    if backend == "memory":
        return _in_one_process(members, sends)
    url = os.environ["DATABASE_URL"]
    processes = min(PROCESSES, members)
    context = multiprocessing.get_context("spawn")
    ready, acks, results = context.Queue(), context.Queue(), context.Queue()
    shares = [members // processes + (n < members % processes) for n in range(processes)]
    workers = [
        context.Process(
            target=_member_process, args=(backend, redis_url, share, sends, ready, acks, results)
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=300)
    listening = _listening(url) if backend == "pgpubsub" else None
    import psycopg

    from django_pgpubsub.channel_layer.messages import pg_channel

    spy = psycopg.connect(url, autocommit=True)
    spy.execute(f'LISTEN "{pg_channel("asgi", "g", GROUP)}"')
    sender = _layer(backend, redis_url)

    async def send_all() -> None:
        # Connected first: the first send of either layer opens its connection.
        await sender.group_send("warm-up", {"type": "w"})
        for n in range(sends):
            await sender.group_send(GROUP, {"type": "m", "t": time.time(), "n": n})
            for _ in workers:
                await asyncio.to_thread(acks.get, timeout=300)

    asyncio.run(send_all())
    latencies = [value for _ in workers for value in results.get(timeout=300)]
    for worker in workers:
        worker.join(30)
    notifies = len(list(spy.notifies(timeout=0.5))) if backend == "pgpubsub" else None
    spy.close()
    return _figures(backend, members, latencies, notifies=notifies, listening=listening)


def _in_one_process(members: int, sends: int) -> dict[str, Any]:
    layer = _layer("memory", "")

    class Acks:
        def __init__(self) -> None:
            self.done: asyncio.Queue[int] = asyncio.Queue()

        def put(self, n: int) -> None:
            self.done.put_nowait(n)

    async def together() -> list[float]:
        ready, acks = Acks(), Acks()
        task = asyncio.ensure_future(_members(layer, members, sends, ready, acks))
        await ready.done.get()
        for n in range(sends):
            await layer.group_send(GROUP, {"type": "m", "t": time.time(), "n": n})
            await acks.done.get()
        return await task

    latencies = asyncio.run(together())
    return _figures("memory", members, latencies, notifies=None, listening=None)


def _figures(
    backend: str, members: int, latencies: list[float], *, notifies: int | None, listening: Any
) -> dict[str, Any]:
    ordered = sorted(latencies)
    sends = len(ordered) // members
    return {
        "layer": backend,
        "members": members,
        "deliveries": len(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000,
        "notifies_per_send": None if notifies is None else notifies / sends,
        "listening": listening,
    }


def round_trip_us(backend: str, count: int) -> float:
    """Microseconds per send to a new channel and its receive, on one process."""
    layer = _layer(backend, "")

    async def trips() -> float:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "warm up"})
        await layer.receive(channel)
        started = time.perf_counter()
        for n in range(count):
            await layer.send(channel, {"type": "m", "n": n})
            await layer.receive(channel)
        return (time.perf_counter() - started) / count * 1e6

    return asyncio.run(trips())


def _echo_process(backend: str, redis_url: str, count: int, names: Any) -> None:
    """Process B: sends each message of its channel back to the channel it names."""
    layer = _layer(backend, redis_url)

    async def echo() -> None:
        channel = await layer.new_channel()
        names.put(channel)
        for _ in range(count + 1):  # and the warm-up
            message = await layer.receive(channel)
            await layer.send(message["reply"], {"type": "pong", "n": message["n"]})

    asyncio.run(echo())


def cross_round_trip_us(backend: str, count: int, redis_url: str = "") -> float:
    """Microseconds per round trip between two processes: ``send()`` from this
    process to a channel of another, which sends a message back (two messages,
    each through the server)."""
    context = multiprocessing.get_context("spawn")
    names = context.Queue()
    echo = context.Process(target=_echo_process, args=(backend, redis_url, count, names))
    echo.start()
    layer = _layer(backend, redis_url)

    async def trips() -> float:
        mine = await layer.new_channel()
        theirs = await asyncio.to_thread(names.get, timeout=300)
        await layer.send(theirs, {"type": "ping", "reply": mine, "n": -1})
        await layer.receive(mine)
        started = time.perf_counter()
        for n in range(count):
            await layer.send(theirs, {"type": "ping", "reply": mine, "n": n})
            await layer.receive(mine)
        return (time.perf_counter() - started) / count * 1e6

    try:
        return asyncio.run(trips())
    finally:
        echo.join(30)


def _raw_echo_process(url: str, count: int, ready: Any) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN ping")
        ready.put(True)
        for _ in range(count + 1):  # and the warm-up
            # One at a time: a notifies() generator keeps the connection to itself.
            [notify] = conn.notifies(stop_after=1)
            conn.execute("SELECT pg_notify('pong', %s)", [notify.payload])


def raw_cross_round_trip_us(count: int) -> float:
    """:func:`cross_round_trip_us` for two bare psycopg 3 connections: what
    PostgreSQL's NOTIFY and two processes cost, without any layer."""
    import psycopg

    url = os.environ["DATABASE_URL"]
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    echo = context.Process(target=_raw_echo_process, args=(url, count, ready))
    echo.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN pong")
        ready.get(timeout=300)
        conn.execute("SELECT pg_notify('ping', '-1')")
        list(conn.notifies(stop_after=1))
        started = time.perf_counter()
        for n in range(count):
            conn.execute("SELECT pg_notify('ping', %s)", [str(n)])
            list(conn.notifies(stop_after=1))
        spent = time.perf_counter() - started
    echo.join(30)
    return spent / count * 1e6


def fanout_us(backend: str, members: int, sends: int = 5) -> float:
    """Microseconds per delivered message of a group_send to ``members`` in one process."""
    layer = _layer(backend, "")

    async def fanout() -> float:
        channels = [await layer.new_channel() for _ in range(members)]
        for channel in channels:
            await layer.group_add(GROUP, channel)
        spans = []
        for n in range(sends):
            started = time.perf_counter()
            await layer.group_send(GROUP, {"type": "m", "n": n})
            await asyncio.gather(*(layer.receive(channel) for channel in channels))
            spans.append(time.perf_counter() - started)
        return statistics.median(spans) / members * 1e6

    return asyncio.run(fanout())


def redis_binary() -> str | None:
    """Debian's redis-server, if it and channels_redis are installed."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary) or importlib.util.find_spec("channels_redis") is None:
        return None
    return binary


def reference() -> str:
    """The layer ours is compared with: ``"redis"`` or ``"memory"``."""
    return "redis" if redis_binary() else "memory"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """The URL of a throwaway redis-server, or "" when it or channels_redis is missing."""
    binary = redis_binary()
    if binary is None:
        yield ""
        return
    import redis

    from scripts.pgtemp import free_port

    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(500):  # until it answers
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.01)
        client.close()
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def layer_figures(sizes: LayerSizes) -> list[dict[str, Any]]:
    """What ``bench.__main__.Figure`` takes: ours as ``library``, the other layer as ``raw``."""
    figures: list[dict[str, Any]] = []
    with redis_server() as redis_url:
        other = "redis" if redis_url else "memory"
        for members in sizes.members:
            ours = group_latency("pgpubsub", members, sizes.sends, redis_url)
            theirs = group_latency(other, members, sizes.sends, redis_url)
            print(f"layer, {members:,} members: {ours} / {theirs}", flush=True)
            for name in ("p50", "p99"):
                value = ours[f"{name}_ms"]
                target, met = "", None
                if name == "p99" and members >= 10_000:
                    target, met = "<= 100 ms", value <= 100
                figures.append(
                    _figure(
                        f"layer {members:,}: {name} vs {other}",
                        "ms",
                        theirs[f"{name}_ms"],
                        value,
                        target,
                        met,
                    )
                )
            per_send = ours["notifies_per_send"]
            figures.append(
                _figure(
                    f"layer {members:,}: NOTIFYs/send", "", None, per_send, "== 1", per_send == 1
                )
            )
            expected = min(PROCESSES, members)
            figures.append(
                _figure(
                    f"layer {members:,}: listening",
                    "conns",
                    None,
                    ours["listening"],
                    f"== {expected}",
                    ours["listening"] == expected,
                )
            )
        cross = cross_round_trip_us("pgpubsub", sizes.cross_trips)
        raw = raw_cross_round_trip_us(sizes.cross_trips)
        print(f"layer, cross-process round trip: {cross:.0f} µs, raw psycopg {raw:.0f} µs")
        figures.append(_figure("layer 2-process round trip vs psycopg", "µs", raw, cross, "", None))
        if redis_url:
            redis = cross_round_trip_us("redis", sizes.cross_trips, redis_url)
            print(f"layer, cross-process round trip on channels_redis: {redis:.0f} µs")
            name = "layer 2-process round trip vs redis"
            figures.append(_figure(name, "µs", redis, cross, "", None))
    memory, trip = (
        round_trip_us("memory", sizes.round_trips),
        round_trip_us("pgpubsub", sizes.round_trips),
    )
    figures.append(
        _figure("layer round trip vs memory", "µs", memory, trip, "<= 2", trip <= 2 * memory)
    )
    memory, fanout = (
        fanout_us("memory", sizes.local_members),
        fanout_us("pgpubsub", sizes.local_members),
    )
    name = f"layer fan-out {sizes.local_members:,} vs memory"
    figures.append(_figure(name, "µs/msg", memory, fanout, "<= 2", fanout <= 2 * memory))
    return figures


def _figure(  # noqa: PLR0917 - the fields of bench.__main__.Figure, in order
    name: str, unit: str, raw: float | None, library: float, target: str, met: bool | None
) -> dict[str, Any]:
    return {
        "name": name,
        "unit": unit,
        "raw": raw,
        "library": library,
        "target": target,
        "met": met,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=LayerSizes.sends)
    parser.add_argument("--members", default="1,100,10000")
    args = parser.parse_args()
    _layer("memory", "")  # sets Django up
    from django.core.management import call_command

    call_command("migrate", verbosity=0)  # the layer's table
    sizes = LayerSizes(members=tuple(int(m) for m in args.members.split(",")), sends=args.sends)
    for figure in layer_figures(sizes):
        print(figure, flush=True)


if __name__ == "__main__":
    main()
