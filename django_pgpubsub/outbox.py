"""Durable events: the outbox table's SQL, the listener's claim-and-handle loop,
and the maintenance operations behind ``manage.py durable_events`` and the admin.

A durable event is a row written in the sender's transaction; the NOTIFY that
goes with it (on :data:`WAKEUP_CHANNEL`, payload: the event's channel) only
wakes listeners. Listeners claim due rows with ``FOR UPDATE SKIP LOCKED``, run
the handlers inside the claim's transaction and delete the row on success, so
a handler's writes commit together with the event's completion. A killed
listener's transaction rolls back and its rows are claimed again.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.db import DatabaseError, connections, transaction
from django.db.models import Count

from django_pgpubsub import conf
from django_pgpubsub.channels import validate_channels
from django_pgpubsub.events import DurableEvent, log_fields
from django_pgpubsub.observer import Observer
from django_pgpubsub.registry import Handler, handler_name

logger = logging.getLogger("django_pgpubsub.durable")

OUTBOX_TABLE = "django_pgpubsub_outbox"
WAKEUP_CHANNEL = "django_pgpubsub.durable"

STORE_SQL = f"""
WITH stored AS (
    INSERT INTO {OUTBOX_TABLE}
        (channel, payload, sender_pid, state, attempts, created_at, available_at, last_error)
    VALUES (%s, %s, pg_backend_pid(), 'pending', 0, now(), now(), '')
)
SELECT pg_notify('{WAKEUP_CHANNEL}', %s)
"""

STORE_MANY_SQL = f"""
WITH items AS (
    SELECT * FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(channel, payload, n)
), stored AS (
    INSERT INTO {OUTBOX_TABLE}
        (channel, payload, sender_pid, state, attempts, created_at, available_at, last_error)
    SELECT channel, payload, pg_backend_pid(), 'pending', 0, now(), now(), ''
    FROM items ORDER BY n
)
SELECT count(pg_notify('{WAKEUP_CHANNEL}', channel)) FROM (SELECT DISTINCT channel FROM items) c
"""

CLAIM_SQL = f"""
SELECT id, channel, payload, sender_pid, attempts FROM {OUTBOX_TABLE}
WHERE state = 'pending' AND channel = ANY(%s) AND available_at <= now()
ORDER BY id LIMIT %s
FOR UPDATE SKIP LOCKED
"""

DELETE_SQL = f"DELETE FROM {OUTBOX_TABLE} WHERE id = ANY(%s)"

FAIL_SQL = f"""
UPDATE {OUTBOX_TABLE}
SET attempts = attempts + 1,
    last_error = %s,
    available_at = now() + %s * interval '1 second',
    state = CASE WHEN attempts + 1 >= %s THEN 'failed' ELSE 'pending' END
WHERE id = %s
"""


class Outbox:
    """The outbox of one database, as a listener sweeps it."""

    def __init__(self, using: str, observer: Observer | None = None) -> None:
        self.using = using
        self.observer = observer or Observer()
        self._exists: bool | None = None  # known after the first look

    def sweep(
        self,
        handlers: dict[str, tuple[Handler, ...]],
        should_stop: Callable[[], bool],
        limit: int | None,
    ) -> int:
        """Handle the due events of ``handlers``' channels; never raises for the database.

        Returns:
            How many events were handled.
        """
        try:
            if self._exists is None:
                self._exists = self._table_exists()
                if not self._exists:
                    logger.warning(
                        "No outbox table on %r: durable events are not handled. "
                        "Run `manage.py migrate django_pgpubsub`.",
                        self.using,
                    )
            if not self._exists:
                return 0
            return handle_due_events(
                using=self.using,
                handlers=handlers,
                should_stop=should_stop,
                limit=limit,
                observer=self.observer,
            )
        except DatabaseError as exc:
            # Rolled back: the events stay pending and the next sweep retries.
            logger.warning("Cannot handle durable events now (%s); retrying later.", exc)
            return 0

    def _table_exists(self) -> bool:
        connection = connections[self.using]
        with connection.cursor() as cursor:
            return OUTBOX_TABLE in connection.introspection.table_names(cursor)


def retry_delay(attempts_so_far: int) -> float:
    """Seconds before the next attempt: doubling from DURABLE_RETRY_DELAY, capped."""
    return min(
        conf.durable_retry_max_delay(),
        conf.durable_retry_delay() * 2.0 ** max(0, attempts_so_far),
    )


def handle_due_events(
    *,
    using: str,
    handlers: dict[str, tuple[Handler, ...]],
    should_stop: Callable[[], bool],
    limit: int | None = None,
    observer: Observer | None = None,
) -> int:
    """Claim due events of ``handlers``' channels batch after batch; handle each.

    Each batch is one transaction on ``using``. Each event's handlers run in a
    savepoint: if one raises, their writes roll back, the failure is recorded
    and the event is retried later (or left as failed after the last attempt),
    and the batch goes on. Handled events are deleted when the batch commits.

    Args:
        using: The database alias of the outbox.
        handlers: Channel -> handlers; only these channels are claimed.
        should_stop: Checked after each event.
        limit: Handle at most this many events.
        observer: Told of each event handled and each handler that failed.

    Returns:
        How many events were handled, successfully or not.
    """
    channels = sorted(handlers)
    observer = observer or Observer()
    max_attempts = conf.durable_max_attempts()
    total = 0
    while not should_stop():
        batch_size = conf.durable_batch_size()
        if limit is not None:
            batch_size = min(batch_size, limit - total)
            if batch_size <= 0:
                return total
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(CLAIM_SQL, (channels, batch_size))
            rows = cursor.fetchall()
            done: list[int] = []
            for row_id, channel, payload, sender_pid, attempts in rows:
                event = DurableEvent(channel, payload, sender_pid, row_id, attempts + 1)
                started = time.perf_counter()
                error = _run(event, handlers[channel], using, observer)
                if observer.timed:
                    observer.handled(channel, time.perf_counter() - started)
                if error is None:
                    done.append(row_id)
                else:
                    delay = retry_delay(attempts)
                    cursor.execute(FAIL_SQL, (error, delay, max_attempts, row_id))
                total += 1
                if should_stop():
                    break  # unreached rows stay pending; the commit unlocks them
            if done:
                cursor.execute(DELETE_SQL, (done,))
        if len(rows) < batch_size:
            return total
    return total


def _run(
    event: DurableEvent, functions: tuple[Handler, ...], using: str, observer: Observer
) -> str | None:
    """Run the event's handlers in a savepoint; return the traceback of a failure."""
    running: Handler | None = None
    try:
        with transaction.atomic(using=using):
            for running in functions:
                running(event)
    except Exception:
        name = handler_name(running) if running else "?"
        if running is not None:
            observer.handler_failed(event.channel, running)
        logger.exception(
            "Handler %s failed on durable event %d (channel %r, attempt %d); "
            "its handlers' writes are rolled back and it will be retried.",
            name,
            event.id,
            event.channel,
            event.attempt,
            extra={**log_fields(event), "handler": name},
        )
        return traceback.format_exc()
    return None


def counts(using: str | None = None) -> list[tuple[str, str, int]]:
    """``(channel, state, count)`` of the outbox, ordered by channel and state."""
    from django_pgpubsub.models import OutboxEvent  # noqa: PLC0415 - needs the app registry

    rows = (
        OutboxEvent.objects.using(using or conf.database())
        .values_list("channel", "state")
        .annotate(count=Count("id"))
        .order_by("channel", "state")
    )
    return [(channel, state, count) for channel, state, count in rows]


def retry_failed(
    *,
    ids: Iterable[int] | None = None,
    channels: Iterable[str] | None = None,
    using: str | None = None,
) -> int:
    """Make failed events pending again, with a fresh set of attempts, and wake listeners.

    Returns:
        How many events will be retried.
    """
    from django_pgpubsub.models import OutboxEvent  # noqa: PLC0415

    alias = using or conf.database()
    with transaction.atomic(using=alias):
        failed = OutboxEvent.objects.using(alias).filter(state=OutboxEvent.State.FAILED)
        if ids is not None:
            failed = failed.filter(id__in=list(ids))
        if channels is not None:
            failed = failed.filter(channel__in=validate_channels(channels))
        woken = sorted(set(failed.values_list("channel", flat=True)))
        count = failed.update(state=OutboxEvent.State.PENDING, attempts=0, available_at=_now(alias))
        with connections[alias].cursor() as cursor:
            for channel in woken:
                cursor.execute("SELECT pg_notify(%s, %s)", (WAKEUP_CHANNEL, channel))
    return int(count)


def purge_failed(older_than: timedelta, *, using: str | None = None) -> int:
    """Delete failed events created more than ``older_than`` ago; return how many."""
    from django_pgpubsub.models import OutboxEvent  # noqa: PLC0415

    alias = using or conf.database()
    cutoff = _now(alias) - older_than
    deleted, _ = (
        OutboxEvent.objects.using(alias)
        .filter(state=OutboxEvent.State.FAILED, created_at__lt=cutoff)
        .delete()
    )
    return int(deleted)


def _now(using: str) -> datetime:
    """The database's clock: rows are stamped with now() there, not in Python."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT now()")
        now: datetime = cursor.fetchone()[0]
        return now
