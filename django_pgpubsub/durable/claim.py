"""One claim of durable events: taken in a statement that commits at once, then
handled event by event, each in a transaction of its own.

See :mod:`django_pgpubsub.durable.outbox` for the whole cycle and
:mod:`django_pgpubsub.db.sql` for the statements.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction

from django_pgpubsub import conf
from django_pgpubsub.backoff import MAX_DELAY, backoff
from django_pgpubsub.db import sql
from django_pgpubsub.db.connection import fetch_rows, transaction_untouched
from django_pgpubsub.events import DurableEvent, log_fields
from django_pgpubsub.observer import Observer
from django_pgpubsub.registry import Handler, handler_name

logger = logging.getLogger("django_pgpubsub.durable")

Row = tuple[int, str, str, int, int]  # id, channel, payload, sender_pid, attempts


class ClaimLost(Exception):
    """The event's claim was taken back while its handlers ran."""


def sanitize(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL bytes and lone surrogates escaped."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def retry_delay(attempt: int) -> float:
    """Seconds before the retry that follows failed attempt number ``attempt`` (1, 2...)."""
    return backoff(conf.durable_retry_delay(), conf.durable_retry_max_delay(), attempt)


class Claim:
    """One batch of claimed events, handled one by one under one token."""

    def __init__(
        self, using: str, observer: Observer, limit: int | None, *, prepare: bool = False
    ) -> None:
        self.using = using
        self.prepare = prepare  # the completion statement; see drivers.fetch
        self.observer = observer
        self.token = str(uuid.uuid4())
        self.lease = min(conf.durable_lease(), MAX_DELAY)
        self.limit = limit
        self.renewed = time.monotonic()

    def _params(self, **values: Any) -> dict[str, Any]:
        return {"token": self.token, "lease": self.lease, "next": None, **values}

    def take(self, channels: list[str], size: int) -> list[Row]:
        """Claim up to ``size`` due events, oldest first; the first one's attempt starts."""
        rows = fetch_rows(self.using, sql.CLAIM_SQL, self._params(channels=channels, limit=size))
        self.renewed = time.monotonic()
        return sorted(rows)

    def run(
        self,
        rows: Sequence[Row],
        handlers: dict[str, tuple[Handler, ...]],
        should_stop: Callable[[], bool],
        handled: list[int],
    ) -> None:
        started: int | None = rows[0][4] if rows else None  # the claim started the first
        count = 0
        index = 0
        try:
            for index, (row_id, channel, payload, sender_pid, _) in enumerate(rows):
                if started is None:
                    if should_stop():
                        self.release(rows[index:])
                        return
                    self._renew_if_due(rows[index:])
                    started = self._start(row_id)
                    if started is None:
                        logger.warning("Durable event %d was claimed by another listener.", row_id)
                        continue
                count += 1
                last = self.limit is not None and count >= self.limit
                following = (
                    None if last or index + 1 == len(rows) or should_stop() else rows[index + 1][0]
                )
                event = DurableEvent(channel, payload, sender_pid, row_id, started)
                started = self._handle(event, handlers[channel], following)
                handled[0] += 1
                if last:
                    self.release(rows[index + 1 :])
                    return
        except BaseException:
            # Hand back what was never started, if the database still answers.
            try:
                self.release(rows[index:])  # started ones stay: recovery counts them
            except Exception:
                logger.debug("Cannot release the rest of a claim.", exc_info=True)
            raise

    def _renew_if_due(self, rows: Sequence[Row]) -> None:
        """Keep the leases of claimed events that wait for their turn."""
        now = time.monotonic()
        if now - self.renewed > self.lease / 3:
            self.renewed = now
            fetch_rows(self.using, sql.RENEW_SQL, self._params(ids=[row[0] for row in rows]))

    def release(self, rows: Sequence[Row]) -> None:
        """Give back claimed events that were not started, as they were."""
        if rows:
            fetch_rows(self.using, sql.RELEASE_SQL, self._params(ids=[row[0] for row in rows]))

    def _complete(self, params: dict[str, Any]) -> tuple[Any, ...]:
        [completed] = fetch_rows(self.using, sql.COMPLETE_SQL, params, prepare=self.prepare)
        return completed

    def _start(self, row_id: int) -> int | None:
        [(_, attempt)] = fetch_rows(self.using, sql.START_SQL, self._params(next=row_id))
        return None if attempt is None else int(attempt)

    def _handle(
        self, event: DurableEvent, functions: tuple[Handler, ...], following: int | None
    ) -> int | None:
        """Run the event's handlers and complete it (or record its failure).

        Returns:
            The attempt number of the ``following`` event, when the statement
            that completed this one also started it.
        """
        params = self._params(id=event.id, next=following)
        running: Handler | None = None
        completed: tuple[Any, ...] | None = None
        alone = False  # the completion runs after the handlers' transaction
        observer = self.observer
        began = time.perf_counter()
        try:
            with transaction.atomic(using=self.using):
                for running in functions:
                    running(event)
                running = None
                if transaction_untouched(self.using):
                    # The handlers ran no SQL here: there are no writes to
                    # commit with the completion, which then takes one round
                    # trip in autocommit instead of BEGIN, DELETE and COMMIT.
                    alone = True
                else:
                    completed = self._complete(params)
                    if not completed[0]:
                        raise ClaimLost
        except ClaimLost:
            self._log_claim_lost(event)
            return None
        except Exception:
            if alone:
                # Only an on_commit callback can raise after the handlers
                # returned; the event was handled, and is completed below.
                self._log_on_commit_error(event)
            else:
                return self._handle_error(event, running, completed, following)
        finally:
            if observer.timed:
                observer.handled(event.channel, time.perf_counter() - began)
        if alone:
            completed = self._complete(params)
            if not completed[0]:
                self._log_claim_lost(event)
                return None
        assert completed is not None
        return None if completed[1] is None else int(completed[1])

    def _handle_error(
        self,
        event: DurableEvent,
        running: Handler | None,
        completed: tuple[Any, ...] | None,
        following: int | None,
    ) -> int | None:
        """Record the failure being handled; see :meth:`_handle` for the return value."""
        error = traceback.format_exc()
        if completed is not None and not self._held(event.id):
            # Committed: what raised was an on_commit callback.
            self._log_on_commit_error(event)
            return None if completed[1] is None else int(completed[1])
        name = handler_name(running) if running else "(completion)"
        if running is not None:
            self.observer.handler_failed(event.channel, running)
        logger.exception(
            "Handler %s failed on durable event %d (channel %r, attempt %d); its "
            "handlers' writes are rolled back.",
            name,
            event.id,
            event.channel,
            event.attempt,
            extra={**log_fields(event), "handler": name},
        )
        return self._fail(event, error, following)

    def _log_claim_lost(self, event: DurableEvent) -> None:
        logger.warning(
            "Durable event %d (channel %r, attempt %d) was claimed again while its "
            "handlers ran (longer than DURABLE_LEASE?): their writes are rolled back.",
            event.id,
            event.channel,
            event.attempt,
            extra=log_fields(event),
        )

    def _log_on_commit_error(self, event: DurableEvent) -> None:
        logger.exception(
            "An on_commit callback of durable event %d (channel %r) raised; the event was handled.",
            event.id,
            event.channel,
            extra=log_fields(event),
        )

    def _held(self, row_id: int) -> bool:
        return bool(fetch_rows(self.using, sql.HELD_SQL, (row_id, self.token))[0][0])

    def _fail(self, event: DurableEvent, error: str, following: int | None) -> int | None:
        max_attempts = conf.durable_max_attempts()
        params = self._params(
            id=event.id,
            next=following,
            error=sanitize(error),
            delay=retry_delay(event.attempt),
            max_attempts=max_attempts,
        )
        [(recorded, attempt)] = fetch_rows(self.using, sql.FAIL_SQL, params)
        if recorded and event.attempt >= max_attempts:
            logger.error(
                "Durable event %d (channel %r) failed %d attempt(s); it stays failed "
                "until `durable_events retry`.",
                event.id,
                event.channel,
                event.attempt,
                extra=log_fields(event),
            )
        return None if attempt is None else int(attempt)
