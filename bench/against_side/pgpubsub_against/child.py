"""``python -m pgpubsub_against.child trivial|writes COUNT ROUNDS``, in the measured tree.

With ``DATABASE_URL`` set to a fresh server: migrates, makes the written
table, then ROUNDS times starts one ``listen_events`` of the tree (its
``bench.__main__.Listener``), stores COUNT durable events in one transaction
and times until the outbox is empty. Prints ``RATES`` and the events/s.
"""

from __future__ import annotations

import signal
import sys
import time

import django


def rate(kind: str, count: int) -> float:
    """Events per second for one listener, from storing ``count`` events to an empty outbox."""
    from django.db import connection, transaction

    import bench.__main__ as tree
    from django_pgpubsub import notify_many
    from django_pgpubsub.models import OutboxEvent

    from .pubsub import CHANNELS

    channel = CHANNELS[kind]
    outbox = OutboxEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {outbox}, bench_against_written")
        cursor.execute(f"VACUUM ANALYZE {outbox}")
    listener = tree.Listener(
        "library", channel, None, DJANGO_SETTINGS_MODULE="pgpubsub_against.settings"
    )
    items = ((channel, f'{{"id":{i}}}') for i in range(count))
    started = time.perf_counter()
    with transaction.atomic():
        notify_many(items, durable=True)
    while OutboxEvent.objects.exists():
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    listener.process.send_signal(signal.SIGTERM)
    listener.finish()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM bench_against_written")
        [written] = cursor.fetchone() or [None]
    expected = count if kind == "writes" else 0
    if written != expected:
        raise SystemExit(f"{kind}: {written} rows written, expected {expected}")
    return count / elapsed


def main(kind: str, count: int, rounds: int) -> None:
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from .models import TABLE_SQL

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(TABLE_SQL)
    rates = [rate(kind, count) for _ in range(rounds)]
    print("RATES", *rates, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
