"""Group commit: a run of a claim's events handled in one transaction, each in a savepoint."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from django.db import DatabaseError, connections, transaction

from django_pgpubsub import conf
from django_pgpubsub.db import claim_sql
from django_pgpubsub.db.connection import fetch_rows, transaction_untouched
from django_pgpubsub.durable.attempt import (
    Claimed,
    Holder,
    aborted,
    refuse_rollback,
    retry_delay,
    sanitize,
)
from django_pgpubsub.vocabulary.events import DurableEvent, log_fields
from django_pgpubsub.vocabulary.handlers import Handler, handler_name
from django_pgpubsub.vocabulary.tracing import processing

logger = logging.getLogger("django_pgpubsub.durable")

# Events per transaction at most: under the 64 subtransactions (savepoints
# that wrote) that PostgreSQL caches per transaction before every other
# session's snapshot checks get slower.
GROUP_MAX = 50
# Bytes of payloads a group reads at once (its first event's, whatever its size).
GROUP_BYTES = 1_000_000
# Seconds after which a group starts no more events and commits.
GROUP_SECONDS = 0.05


class Failure(NamedTuple):
    """A failed attempt, recorded with the group's completion."""

    event: DurableEvent
    error: str
    delay: float
    exception: BaseException | None = None
    handler: str = "(completion)"  # the handler that raised


class Outcome(NamedTuple):
    """What a group did with its events (by id)."""

    handled: list[int]  # handled, successfully or not, and committed as such
    back: list[int]  # started, not handled: claimed again as not started
    lost: list[int]  # taken back by another listener's recovery
    failures: list[Failure]  # among handled: recorded as failed attempts
    isolated: list[int]  # rolled back by a failed COMMIT: pending, to run alone


class Group:
    """One transaction of a claim's events, each in a savepoint of its own."""

    def __init__(self, holder: Holder, rows: Sequence[Claimed]) -> None:
        self.holder = holder
        self.rows = list(rows)
        self.events: list[DurableEvent] = []
        self.headers: list[str | None] = []  # per event: its sender's trace context
        self.savepoints: list[str | None] = []  # per event run: None when none was needed
        # Per event run: how many on_commit callbacks were registered before it.
        self.callbacks: list[int] = []
        self.done: list[int] = []  # indexes in self.events, handled without error
        self.failures: dict[int, Failure] = {}  # index -> failure
        self.lost: list[int] = []
        self.isolated: list[int] = []
        self.end = 0  # the events before this index are completed or failed
        self.rollback_all = False

    def start(self) -> list[int]:
        """Count the group's attempts (a statement that commits at once).

        Returns:
            The ids that the claim no longer holds (dropped from the group).
        """
        holder = self.holder
        params = holder.params(ids=[row.id for row in self.rows], max_bytes=GROUP_BYTES)
        held = fetch_rows(holder.using, claim_sql.START_GROUP_SQL, params)
        started = {
            row_id: (n, payload, headers) for row_id, n, payload, headers in held if n is not None
        }
        lost = sorted({row.id for row in self.rows} - {row[0] for row in held})
        self.rows = [row for row in self.rows if row.id in started]
        for row in self.rows:
            attempt, payload, headers = started[row.id]
            self.events.append(
                DurableEvent(row.channel, payload or "", row.sender_pid, row.id, attempt)
            )
            self.headers.append(headers)
        return lost

    def run(self, handlers: dict[str, tuple[Handler, ...]], stop: Callable[[], bool]) -> Outcome:
        """Run the events' handlers and commit the group.

        Args:
            handlers: Channel -> handlers.
            stop: Checked before each event but the first: true ends the group there.
        """
        using = self.holder.using
        wrapper = connections[using]
        committed = False
        left = False  # the atomic block's body is over: committing
        try:
            with transaction.atomic(using=using):
                self.end = self._handle(handlers, stop)
                # Completed in the transaction when a handler wrote, or left
                # on_commit callbacks, which then run once their event is
                # completed, as they would if it had run alone.
                if not self.rollback_all and (
                    not transaction_untouched(using) or wrapper.run_on_commit
                ):
                    committed = self._finish_in_transaction()
                left = True
        except DatabaseError as exc:
            if not left:
                raise
            # COMMIT failed (a deferred constraint, a serialization failure):
            # everything rolled back, callbacks included.
            self._commit_failed(exc)
            return self._outcome()
        except Exception:
            if not left:
                raise
            # Committed: what raised is an on_commit callback of a handler's.
            self._log_on_commit_error()
        if not committed:
            # No handler's writes are in the transaction (none ran SQL, or
            # it was rolled back): the completion commits alone, in autocommit.
            lost = set(self._finish(relax=True))
            if lost:
                self._log_lost(next(e for e in self.events if e.id in lost))
                self.lost += sorted(lost)
        return self._outcome()

    def keyed_channels(self, ids: list[int]) -> list[str]:
        """The channels of the events ``ids`` that have an ordering key: their
        keys' next events may be due now."""
        handled = set(ids)
        return sorted({r.channel for r in self.rows if r.id in handled and r.ordering_key})

    # -- the handlers ---------------------------------------------------------

    def _handle(self, handlers: dict[str, tuple[Handler, ...]], stop: Callable[[], bool]) -> int:
        """Run the events' handlers in order; return how many events ran."""
        using = self.holder.using
        wrapper = connections[using]
        observer = self.holder.observer
        began = time.monotonic()
        for index, event in enumerate(self.events):
            if index and (time.monotonic() - began >= GROUP_SECONDS or stop()):
                return index
            callbacks = len(wrapper.run_on_commit)
            # No savepoint while nothing before this event could be lost by
            # rolling the whole transaction back: no SQL, no callbacks.
            untouched = callbacks == 0 and transaction_untouched(using)
            savepoint = None if untouched else transaction.savepoint(using)
            self.savepoints.append(savepoint)
            self.callbacks.append(callbacks)
            running: Handler | None = None
            timer = time.perf_counter()
            functions = handlers[event.channel]
            # One consumer span per event, ended with it: never one held
            # across the group.
            with processing(event, functions, self.headers[index]) as span:
                try:
                    for running in functions:
                        running(event)
                        if wrapper.needs_rollback or aborted(wrapper):
                            refuse_rollback(running)
                except Exception as exc:
                    span.failed(exc)
                    self.failures[index] = self._failed(event, running)
                    # Django scopes callbacks to atomic blocks, not to the
                    # savepoints taken here: the failed event's are dropped here.
                    del wrapper.run_on_commit[callbacks:]
                    if savepoint is not None:
                        # (set_rollback(True) would refuse the ROLLBACK TO SAVEPOINT.)
                        transaction.set_rollback(False, using)
                        transaction.savepoint_rollback(savepoint, using)
                    elif not transaction_untouched(using):
                        # It wrote before raising, with no savepoint (nothing
                        # before it wrote): the whole transaction rolls back, and
                        # the group ends with this event.
                        transaction.set_rollback(True, using)
                        self.rollback_all = True
                        return index + 1
                else:
                    self.done.append(index)
                    self._guard_callbacks(wrapper.run_on_commit, callbacks, event)
                finally:
                    if observer.timed:
                        observer.handled(event.channel, time.perf_counter() - timer)
        return len(self.events)

    @staticmethod
    def _guard_callbacks(run_on_commit: list[Any], since: int, event: DurableEvent) -> None:
        """Make the on_commit callbacks that ``event``'s handlers registered log
        what they raise: one that raises must not stop its group's others."""

        def guarded(function: Callable[[], Any]) -> Callable[[], None]:
            def call() -> None:
                try:
                    function()
                except Exception:
                    logger.exception(
                        "An on_commit callback of durable event %d (channel %r) raised; "
                        "the event was handled.",
                        event.id,
                        event.channel,
                        extra=log_fields(event),
                    )

            return call

        for position in range(since, len(run_on_commit)):
            entry = run_on_commit[position]
            run_on_commit[position] = (entry[0], guarded(entry[1]), *entry[2:])

    def _failed(self, event: DurableEvent, running: Handler | None) -> Failure:
        error = traceback.format_exc()
        name = handler_name(running) if running else "(completion)"
        if running is not None:
            self.holder.observer.handler_failed(event.channel, running)
        logger.exception(
            "Handler %s failed on durable event %d (channel %r, attempt %d); its "
            "handlers' writes are rolled back.",
            name,
            event.id,
            event.channel,
            event.attempt,
            extra={**log_fields(event), "handler": name},
        )
        delay = 0.0 if self.holder.retry_at_once else retry_delay(event.attempt)
        return Failure(event, sanitize(error), delay, sys.exc_info()[1], name)

    # -- the completion -------------------------------------------------------

    def _finish_in_transaction(self) -> bool:
        """Complete the group in its transaction; roll back what the claim lost.

        Returns:
            Whether the completion is in the transaction (else it rolls back,
            and the events before the first lost one, which wrote nothing,
            are completed after it).
        """
        using = self.holder.using
        while True:
            lost = set(self._finish(relax=False))
            if not lost:
                return True
            first = min(i for i in range(self.end) if self.events[i].id in lost)
            self.lost += sorted(lost)
            self._log_lost(self.events[first])
            self.end = first
            savepoint = self.savepoints[first]
            if savepoint is None:
                transaction.set_rollback(True, using)
                self.rollback_all = True
                return False
            # Undoes the events from ``first`` on, and the completion.
            transaction.savepoint_rollback(savepoint, using)
            del connections[using].run_on_commit[self.callbacks[first] :]

    def _finish(self, *, relax: bool) -> list[int]:
        """Run ``claim_sql.FINISH_GROUP_SQL`` for the events before ``self.end``.

        Returns:
            The ids the claim no longer holds.
        """
        holder = self.holder
        end = self.end
        lost = set(self.lost)
        done = [self.events[i].id for i in self.done if i < end]
        failures = [f for i, f in self.failures.items() if i < end]
        params = holder.params(
            done=[row_id for row_id in done if row_id not in lost],
            failed=[f.event.id for f in failures if f.event.id not in lost],
            errors=[f.error for f in failures if f.event.id not in lost],
            delays=[f.delay for f in failures if f.event.id not in lost],
            max_attempts=conf.durable_max_attempts(),
            back=[e.id for e in self.events[end:] if e.id not in lost],
            relax=relax,
        )
        [(missing, _)] = fetch_rows(holder.using, claim_sql.FINISH_GROUP_SQL, params)
        return [int(row_id) for row_id in missing or ()]

    def _commit_failed(self, exc: DatabaseError) -> None:
        """The group's COMMIT failed and rolled everything back: charge an
        event that ran alone with the error; else give every event that ran
        its attempt back and run each alone, at once, where the one that
        caused the failure is found and charged (as after a crash)."""
        holder = self.holder
        ran = self.events[: self.end]
        if len(ran) == 1:
            [event] = ran
            logger.error(
                "The transaction of durable event %d (channel %r, attempt %d) failed "
                "to commit; its handlers' writes are rolled back.",
                event.id,
                event.channel,
                event.attempt,
                exc_info=True,
                extra=log_fields(event),
            )
            self.done = []
            error = sanitize(traceback.format_exc())
            delay = 0.0 if holder.retry_at_once else retry_delay(event.attempt)
            self.failures = {0: Failure(event, error, delay, exc, "(commit)")}
            self.lost += self._finish(relax=False)
            return
        logger.warning(
            "The transaction of a group of durable events (ids %s) failed to commit "
            "(%s); each runs alone now, and the failure is charged to its cause.",
            [event.id for event in ran],
            exc,
        )
        params = holder.params(
            ids=[event.id for event in ran],
            back=[event.id for event in self.events[self.end :]],
            error=sanitize(f"{type(exc).__name__}: {exc}".strip()),
        )
        fetch_rows(holder.using, claim_sql.ISOLATE_GROUP_SQL, params)
        self.isolated = [event.id for event in ran]
        self.failures = {}

    def _outcome(self) -> Outcome:
        end = self.end
        lost = {*self.lost, *self.isolated}
        handled = [e.id for e in self.events[:end] if e.id not in lost]
        back = [e.id for e in self.events[end:] if e.id not in lost]
        failures = [f for i, f in sorted(self.failures.items()) if i < end]
        failures = [f for f in failures if f.event.id not in lost]
        for failure in failures:
            self._log_failure(failure)
        return Outcome(handled, back, sorted(self.lost), failures, self.isolated)

    def _log_failure(self, failure: Failure) -> None:
        event = failure.event
        if event.attempt >= conf.durable_max_attempts():
            logger.error(
                "Durable event %d (channel %r) failed %d attempt(s); it stays failed "
                "until `durable_events retry`.",
                event.id,
                event.channel,
                event.attempt,
                extra=log_fields(event),
            )

    def _log_on_commit_error(self) -> None:
        logger.exception(
            "An on_commit callback of a durable event's handler raised; the events "
            "of its group (ids %s) were handled.",
            [event.id for event in self.events[: self.end]],
        )

    def _log_lost(self, event: DurableEvent) -> None:
        logger.warning(
            "Durable event %d (channel %r, attempt %d) was claimed again while its "
            "group's handlers ran (longer than DURABLE_LEASE?): its writes, and those "
            "of the events after it in its group, are rolled back.",
            event.id,
            event.channel,
            event.attempt,
            extra=log_fields(event),
        )
