"""The loop the durable benchmarks compare with: one transaction per event.

``python -m bench.durable_loop CHANNEL COUNT trivial|write``: a hand-written
Django loop, as one would write without the library. Per event: BEGIN, one
``DELETE ... FOR UPDATE SKIP LOCKED ... RETURNING`` of the oldest pending
event, the handler (``write``: the same ORM write as the library's handler
in bench/pubsub.py), COMMIT. Prints ``ready`` once set up; exits after COUNT
events.
"""

from __future__ import annotations

import json
import sys
import time

import django

from django_pgpubsub.db.sql import OUTBOX_TABLE

TAKE_ONE_SQL = f"""
DELETE FROM {OUTBOX_TABLE} WHERE id = (
    SELECT id FROM {OUTBOX_TABLE}
    WHERE state = 'pending' AND channel = %s AND available_at <= now()
    ORDER BY id LIMIT 1
    FOR UPDATE SKIP LOCKED
) RETURNING id, payload
"""


def main(channel: str, count: int, write: bool) -> None:
    django.setup()
    from django.db import connection, transaction

    from bench.models import WrittenRow

    connection.ensure_connection()
    print("ready", flush=True)
    handled = 0
    while handled < count:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(TAKE_ONE_SQL, [channel])
                row = cursor.fetchone()
            if row is not None:
                value = json.loads(row[1])["id"]
                if write:
                    WrittenRow(value=value).save()
                handled += 1
        if row is None:
            time.sleep(0.001)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "write")
