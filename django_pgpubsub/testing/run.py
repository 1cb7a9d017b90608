"""At commit, in eager mode: the events published are taken back and handled here.

Plain events run their handlers as the listener does (each handler's error
is kept apart from the others), each handler in ``transaction.atomic()`` on
the ``DATABASE`` setting's alias, so a failing one leaves the test's
transaction usable. Durable events run through the listener's own cycle
(claims, groups, attempts, refusals, ordering keys); a failed attempt is
retried at once, up to ``DURABLE_MAX_ATTEMPTS``, after which the row stays
``failed``.
"""

from __future__ import annotations

import logging

from django.db import transaction

from django_pgpubsub import conf
from django_pgpubsub.db.connection import fetch_rows
from django_pgpubsub.durable.claim import run_now
from django_pgpubsub.testing import sql as eager_sql
from django_pgpubsub.testing.recorder import Recorder, recorders, runner
from django_pgpubsub.vocabulary.events import DurableEvent, Event
from django_pgpubsub.vocabulary.handlers import handler_name

logger = logging.getLogger("django_pgpubsub.testing")


class Drain:
    """The ``on_commit`` callback that handles the events published up to ``upto``."""

    def __init__(self, alias: str, upto: int) -> None:
        self.alias = alias
        self.upto = upto

    def __repr__(self) -> str:
        return f"<django_pgpubsub eager: events up to #{self.upto} on {self.alias!r}>"

    def __call__(self) -> None:
        active = recorders.get()
        if not active:
            return
        rows = sorted(fetch_rows(self.alias, eager_sql.TAKE_SQL, (self.upto,)))
        running = runner()
        errors: list[BaseException] = []
        durable: list[int] = []  # a run of durable events, handled together
        for _, channel, payload, outbox_id, pid in rows:
            if outbox_id is not None:
                durable.append(outbox_id)
                continue
            if durable:
                errors.extend(_run_durable(self.alias, active, running, durable))
                durable = []
            event = Event(channel, payload, pid)
            for recorder in active:
                recorder.record(event)
            if running is not None:
                errors.extend(_run_plain(running, event))
        if durable:
            errors.extend(_run_durable(self.alias, active, running, durable))
        if errors and running is not None and running.propagate:
            raise errors[0]


def _failed(running: Recorder, event: Event, name: str, exc: BaseException) -> None:
    running.published.errors.append(exc)
    if not running.propagate:
        logger.exception(
            "Handler %s failed on channel %r (eager mode).",
            name,
            event.channel,
            exc_info=exc,
        )


def _run_plain(running: Recorder, event: Event) -> list[BaseException]:
    assert running.handlers is not None
    errors: list[BaseException] = []
    for function in running.handlers.sync_handlers(event.channel):
        try:
            with transaction.atomic(using=conf.database()):
                function(event)
        except Exception as exc:
            errors.append(exc)
            _failed(running, event, handler_name(function), exc)
    return errors


def _run_durable(
    alias: str, active: tuple[Recorder, ...], running: Recorder | None, ids: list[int]
) -> list[BaseException]:
    """Handle the durable events ``ids`` with the listener's own cycle
    (:func:`django_pgpubsub.durable.claim.run_now`)."""
    rows = fetch_rows(alias, eager_sql.OUTBOX_ROWS_SQL, (ids,))
    registry = running.handlers if running is not None else None
    handlers = (
        {channel: registry.sync_handlers(channel) for _, channel, *_ in rows} if registry else {}
    )
    for row_id, channel, payload, sender_pid, attempts in rows:
        started = attempts + 1 if handlers.get(channel) else attempts
        event = DurableEvent(channel, payload, sender_pid, row_id, started)
        for recorder in active:
            recorder.record(event)
    if running is None or not handlers:
        # No listener of these channels here: they stay pending, as in production.
        return []
    errors: list[BaseException] = []
    for failure in run_now(alias, [row[0] for row in rows], handlers):
        error = failure.exception or RuntimeError(failure.error)
        errors.append(error)
        _failed(running, failure.event, failure.handler, error)
    return errors
