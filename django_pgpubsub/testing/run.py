"""At commit, in eager mode: the events published are taken back and handled here.

Plain events run their handlers as the listener does (each handler's error
is kept apart from the others), each handler in ``transaction.atomic()`` on
the ``DATABASE`` setting's alias, so a failing one leaves the test's
transaction usable. Durable events are claimed, started, completed or failed
with the listener's own statements; a failed attempt is retried at once, up
to ``DURABLE_MAX_ATTEMPTS``, after which the row stays ``failed``.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from typing import Any

from django.db import transaction

from django_pgpubsub import conf
from django_pgpubsub.db import claim_sql
from django_pgpubsub.db.connection import fetch_rows
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
        for _, channel, payload, outbox_id, pid in rows:
            if outbox_id is None:
                event = Event(channel, payload, pid)
                for recorder in active:
                    recorder.record(event)
                if running is not None:
                    errors.extend(_run_plain(running, event))
            else:
                errors.extend(_run_durable(self.alias, active, running, outbox_id))
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


def _sanitize(text: str) -> str:
    """``text`` as PostgreSQL can store it (as the listener stores its errors)."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _run_durable(
    alias: str, active: tuple[Recorder, ...], running: Recorder | None, outbox_id: int
) -> list[BaseException]:
    found = fetch_rows(alias, eager_sql.OUTBOX_ROW_SQL, (outbox_id,))
    if not found:
        return []
    channel, payload, sender_pid, attempts = found[0]
    functions = running.handlers.sync_handlers(channel) if running and running.handlers else ()
    if running is None or not functions:
        # No listener of this channel here: it stays pending, as in production.
        event = DurableEvent(channel, payload, sender_pid, outbox_id, attempts)
        for recorder in active:
            recorder.record(event)
        return []
    params: dict[str, Any] = {
        "id": outbox_id,
        "token": str(uuid.uuid4()),
        "lease": conf.durable_lease(),
        "next": None,
    }
    max_attempts = conf.durable_max_attempts()
    first = True
    while fetch_rows(alias, eager_sql.CLAIM_ONE_SQL, params):
        [(_, attempt, _payload)] = fetch_rows(
            alias, claim_sql.START_SQL, {**params, "next": outbox_id}
        )
        event = DurableEvent(channel, payload, sender_pid, outbox_id, int(attempt))
        if first:
            first = False
            for recorder in active:
                recorder.record(event)
        function = None
        try:
            with transaction.atomic(using=alias):
                for function in functions:
                    function(event)
                fetch_rows(alias, claim_sql.COMPLETE_SQL, params)
            return []
        except Exception as exc:
            error = _sanitize(traceback.format_exc())
            fetch_rows(
                alias,
                claim_sql.FAIL_SQL,
                {**params, "error": error, "delay": 0.0, "max_attempts": max_attempts},
            )
            if event.attempt >= max_attempts:
                name = handler_name(function) if function is not None else "(completion)"
                _failed(running, event, name, exc)
                return [exc]
    return []
