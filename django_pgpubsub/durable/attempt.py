"""One attempt at one durable event: its handlers, then its completion or its failure.

See :mod:`django_pgpubsub.durable.claim` for the claim the event belongs to,
and :mod:`django_pgpubsub.db.sql` for the statements.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from django_pgpubsub import conf
from django_pgpubsub.backoff import backoff
from django_pgpubsub.db import sql
from django_pgpubsub.db.connection import fetch_rows, transaction_untouched
from django_pgpubsub.events import DurableEvent, log_fields
from django_pgpubsub.observer import Observer
from django_pgpubsub.registry import Handler, handler_name

logger = logging.getLogger("django_pgpubsub.durable")


class ClaimLost(Exception):
    """The event's claim was taken back while its handlers ran."""


class RollbackRequested(Exception):
    """A handler left its transaction marked for rollback (``needs_rollback``)."""


class Started(NamedTuple):
    """An event whose attempt was started: its attempt number and its payload."""

    attempt: int
    payload: str

    @classmethod
    def of(cls, attempt: int | None, payload: str | None) -> Started | None:
        """From a statement's columns, which are NULL when nothing was started."""
        return None if attempt is None else cls(int(attempt), payload or "")


class Holder(NamedTuple):
    """What every statement of one claim names: where, under which token and lease."""

    using: str
    token: str
    lease: float
    prepare: bool  # the completion statement; see drivers.fetch
    observer: Observer

    def params(self, **values: Any) -> dict[str, Any]:
        """The statements' parameters: the token, the lease, and ``values``."""
        return {"token": self.token, "lease": self.lease, "next": None, **values}


def sanitize(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL bytes and lone surrogates escaped."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def retry_delay(attempt: int) -> float:
    """Seconds before the retry that follows failed attempt number ``attempt`` (1, 2...)."""
    return backoff(conf.durable_retry_delay(), conf.durable_retry_max_delay(), attempt)


# libpq's PQTRANS_INERROR, in both drivers' connection.info.transaction_status.
_IN_ERROR = 3


def _aborted(wrapper: BaseDatabaseWrapper) -> bool:
    """Whether the server refuses the transaction (an error that a handler caught)."""
    raw = wrapper.connection
    return raw is not None and raw.info.transaction_status == _IN_ERROR


def _refuse_rollback(function: Handler) -> None:
    raise RollbackRequested(
        f"Handler {handler_name(function)} left its transaction marked for rollback "
        "(transaction.set_rollback(True), or a database error it caught): its writes "
        "are rolled back and the attempt counts as failed."
    )


class Attempt:
    """One started attempt at ``event``, held under ``holder``'s claim."""

    def __init__(self, holder: Holder, event: DurableEvent) -> None:
        self.holder = holder
        self.event = event
        self.retry_in: float | None = None  # set when a failure was recorded for a retry
        self.running: Handler | None = None  # the handler running, or that raised

    def run(
        self, functions: tuple[Handler, ...], following: Callable[[], int | None]
    ) -> Started | None:
        """Run the event's handlers and complete it (or record its failure).

        Args:
            functions: The handlers of the event's channel, in order.
            following: Called once the handlers returned or raised: the
                claim's next event, started by the statement that completes
                this one (one round trip fewer), or None.

        Returns:
            The ``following`` event, when it was started.
        """
        holder = self.holder
        using = holder.using
        wrapper = connections[using]
        event = self.event
        completed: tuple[Any, ...] | None = None
        alone = False  # the completion runs after the handlers' transaction
        observer = holder.observer
        began = time.perf_counter()
        try:
            with transaction.atomic(using=using):
                self._call(functions, wrapper)
                if transaction_untouched(using):
                    # The handlers ran no SQL here: there are no writes to
                    # commit with the completion, which then takes one round
                    # trip in autocommit instead of BEGIN, DELETE and COMMIT.
                    alone = True
                else:
                    completed = self._complete(following())
                    if not completed[0]:
                        raise ClaimLost
        except ClaimLost:
            self._log_claim_lost()
            return None
        except Exception:
            if alone:
                # Only an on_commit callback can raise after the handlers
                # returned; the event was handled, and is completed below.
                self._log_on_commit_error()
            else:
                return self._handle_error(self.running, completed, following)
        finally:
            if observer.timed:
                observer.handled(event.channel, time.perf_counter() - began)
        if alone:
            completed = self._complete(following())
            if not completed[0]:
                self._log_claim_lost()
                return None
        assert completed is not None
        return Started.of(completed[1], completed[2])

    def _call(self, functions: tuple[Handler, ...], wrapper: BaseDatabaseWrapper) -> None:
        """Run the handlers; refuse a transaction that one marked for rollback."""
        for self.running in functions:
            self.running(self.event)
            if wrapper.needs_rollback or _aborted(wrapper):
                _refuse_rollback(self.running)
        self.running = None

    def _complete(self, following: int | None) -> tuple[Any, ...]:
        holder = self.holder
        params = holder.params(id=self.event.id, next=following)
        [completed] = fetch_rows(holder.using, sql.COMPLETE_SQL, params, prepare=holder.prepare)
        return completed

    def _handle_error(
        self,
        running: Handler | None,
        completed: tuple[Any, ...] | None,
        following: Callable[[], int | None],
    ) -> Started | None:
        """Record the failure being handled; see :meth:`run` for the return value."""
        event = self.event
        error = traceback.format_exc()
        if completed is not None and not self._held():
            # Committed: what raised was an on_commit callback.
            self._log_on_commit_error()
            return Started.of(completed[1], completed[2])
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
        return self._fail(error, following)

    def _log_claim_lost(self) -> None:
        event = self.event
        logger.warning(
            "Durable event %d (channel %r, attempt %d) was claimed again while its "
            "handlers ran (longer than DURABLE_LEASE?): their writes are rolled back.",
            event.id,
            event.channel,
            event.attempt,
            extra=log_fields(event),
        )

    def _log_on_commit_error(self) -> None:
        event = self.event
        logger.exception(
            "An on_commit callback of durable event %d (channel %r) raised; the event was handled.",
            event.id,
            event.channel,
            extra=log_fields(event),
        )

    def _held(self) -> bool:
        holder = self.holder
        rows = fetch_rows(holder.using, sql.HELD_SQL, (self.event.id, holder.token))
        return bool(rows[0][0])

    def _fail(self, error: str, following: Callable[[], int | None]) -> Started | None:
        event = self.event
        max_attempts = conf.durable_max_attempts()
        delay = retry_delay(event.attempt)
        params = self.holder.params(
            id=event.id,
            next=following(),
            error=sanitize(error),
            delay=delay,
            max_attempts=max_attempts,
        )
        [(recorded, attempt, payload)] = fetch_rows(self.holder.using, sql.FAIL_SQL, params)
        if recorded and event.attempt < max_attempts:
            self.retry_in = delay
        if recorded and event.attempt >= max_attempts:
            logger.error(
                "Durable event %d (channel %r) failed %d attempt(s); it stays failed "
                "until `durable_events retry`.",
                event.id,
                event.channel,
                event.attempt,
                extra=log_fields(event),
            )
        return Started.of(attempt, payload)
