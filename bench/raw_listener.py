"""The raw psycopg2 loop each benchmark compares against: the physical limit.

Written as well as a raw loop can be: select, poll, drain the whole notifies
list per poll, ``json.loads`` each payload and call a function.

Usage: python -m bench.raw_listener CHANNEL COUNT OUT
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import Any

import psycopg2


def main(channel: str, count: int, out: str) -> None:
    latencies: list[int] = []

    def burst(data: Any) -> None:
        data["id"]

    def latency(data: Any) -> None:
        latencies.append(time.monotonic_ns() - data["t"])

    handle = latency if channel == "bench.latency" else burst
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'LISTEN "{channel}"')
    print("ready", flush=True)
    seen = 0
    loads = json.loads
    notifies = conn.notifies
    while seen < count:
        select.select([conn], [], [], 5.0)
        conn.poll()
        for notify in notifies:
            handle(loads(notify.payload))
        seen += len(notifies)
        notifies.clear()
    conn.close()
    with open(out, "w") as file:
        json.dump({"latencies_ns": latencies}, file)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
