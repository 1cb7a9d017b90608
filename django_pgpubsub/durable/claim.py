"""One claim of durable events: taken in a statement that commits at once, then
handled event by event, each in a transaction of its own.

A :class:`Claim` is the lease on a batch of rows; an
:class:`~django_pgpubsub.durable.attempt.Attempt` is one event's handlers
and completion. A claim may be handled over several turns of the listener's
loop (see :meth:`Claim.run`'s ``deadline``): its waiting rows stay claimed,
their leases renewed, in between. See :mod:`django_pgpubsub.durable.outbox`
for the whole cycle and :mod:`django_pgpubsub.db.sql` for the statements.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

from django_pgpubsub import conf
from django_pgpubsub.backoff import MAX_DELAY
from django_pgpubsub.db import sql
from django_pgpubsub.db.connection import fetch_rows
from django_pgpubsub.durable.attempt import (
    Attempt,
    ClaimLost,
    Holder,
    Started,
    retry_delay,
    sanitize,
)
from django_pgpubsub.events import DurableEvent
from django_pgpubsub.observer import Observer
from django_pgpubsub.registry import Handler

logger = logging.getLogger("django_pgpubsub.durable")

__all__ = ["Claim", "ClaimLost", "Claimed", "retry_delay", "sanitize"]


class Claimed(NamedTuple):
    """One claimed row, as the claim statement returns it."""

    id: int
    channel: str
    sender_pid: int
    attempts: int  # the first row's attempt started with the claim
    payload: str | None  # the first row's only: the others' come when started
    ordering_key: str | None = None


class Claim:
    """The lease on one batch of claimed events, handled one by one under one token.

    Args:
        using: The outbox's alias.
        observer: Told of each event handled.
        holder_key: The key of the advisory lock that the listener holds on
            its listening connection while it lives (see ``sql.HOLD_SQL``);
            None: the claim has its lease alone.
        prepare: Prepare the completion statement (see ``drivers.fetch``).
    """

    def __init__(
        self,
        using: str,
        observer: Observer,
        *,
        holder_key: int | None = None,
        prepare: bool = False,
    ) -> None:
        self.holder = Holder(
            using=using,
            token=str(uuid.uuid4()),
            lease=min(conf.durable_lease(), MAX_DELAY),
            prepare=prepare,
            observer=observer,
        )
        self.holder_key = holder_key
        self.waiting: collections.deque[Claimed] = collections.deque()
        self.started: Started | None = None  # waiting[0], when its attempt started
        self.renewed = time.monotonic()
        self.retry_at: float | None = None  # monotonic time of the earliest retry recorded
        # Whether the claim took events with an ordering key: handling one may
        # let its key's next event become due, which nobody is woken for.
        self.keyed = False

    @property
    def done(self) -> bool:
        """True once every claimed event was handled or given back."""
        return not self.waiting

    def take(self, channels: list[str], size: int) -> int:
        """Claim up to ``size`` due events, oldest first; the first one's attempt starts.

        Returns:
            How many were claimed.
        """
        params = self.holder.params(
            channels=channels,
            limit=size,
            holder=self.holder_key,
            blocking=conf.ordering_blocking_states(),
        )
        rows = sorted(Claimed(*row) for row in fetch_rows(self.holder.using, sql.CLAIM_SQL, params))
        self.renewed = time.monotonic()
        self.waiting.extend(rows)
        self.keyed = any(row.ordering_key is not None for row in rows)
        if rows:
            self.started = Started(rows[0].attempts, rows[0].payload or "")
        return len(rows)

    def run(
        self,
        handlers: dict[str, tuple[Handler, ...]],
        should_stop: Callable[[], bool],
        limit: int | None,
        deadline: float,
    ) -> int:
        """Handle the claimed events in order, until one of these comes first:

        * every one is handled;
        * ``should_stop()`` or ``limit`` events: the rest is given back;
        * ``time.monotonic()`` reaches ``deadline``: the rest stays claimed,
          for the next call. Nothing is started for a later call: the event
          whose attempt started (the claim's first) is handled in this one.

        Returns:
            How many events were handled, successfully or not.
        """
        count = 0
        clock = time.monotonic
        waiting = self.waiting

        def following() -> int | None:
            if len(waiting) < 2 or count == limit or clock() >= deadline or should_stop():
                return None
            return waiting[1].id

        try:
            while waiting:
                if self.started is None:
                    if count == limit or should_stop():
                        self.release()
                        return count
                    if clock() >= deadline:
                        return count
                    self._renew_if_due()
                    self.started = self._start(waiting[0].id)
                    if self.started is None:
                        lost = waiting.popleft()
                        logger.warning("Durable event %d was claimed by another listener.", lost.id)
                        continue
                # The waiting ones' leases run from the claim: renewed on the
                # way, whatever starts the events (see _renew_if_due).
                self._renew_if_due()
                row = waiting[0]
                started = self.started
                count += 1
                event = DurableEvent(
                    row.channel, started.payload, row.sender_pid, row.id, started.attempt
                )
                attempt = Attempt(self.holder, event)
                self.started = attempt.run(handlers[row.channel], following)
                waiting.popleft()
                if row.ordering_key is not None and len(waiting) > 0:
                    self._wake(row.channel)
                if attempt.retry_in is not None:
                    retry_at = clock() + attempt.retry_in
                    self.retry_at = min(self.retry_at or retry_at, retry_at)
            return count
        except BaseException:
            # Hand back what was never started, if the database still answers;
            # started ones stay: recovery counts them.
            try:
                self.release()
            except Exception:
                logger.debug("Cannot release the rest of a claim.", exc_info=True)
            raise

    def _wake(self, channel: str) -> None:
        """Tell the other listeners that a key's next event may be due.

        This listener claims again once its claim is handled; until then
        another one may take the key's next event.
        """
        if conf.durable_wakeup() == "notify":
            fetch_rows(self.holder.using, sql.WAKE_SQL, (channel,))

    def _renew_if_due(self) -> None:
        """Keep the leases of claimed events that wait for their turn, every
        third of ``DURABLE_LEASE``."""
        now = time.monotonic()
        holder = self.holder
        if now - self.renewed > holder.lease / 3:
            self.renewed = now
            params = holder.params(ids=[row.id for row in self.waiting])
            fetch_rows(holder.using, sql.RENEW_SQL, params)

    def release(self) -> None:
        """Give back the claimed events that were not started, as they were."""
        waiting = self.waiting
        if waiting:
            params = self.holder.params(ids=[row.id for row in waiting])
            waiting.clear()
            self.started = None
            fetch_rows(self.holder.using, sql.RELEASE_SQL, params)

    def _start(self, row_id: int) -> Started | None:
        params = self.holder.params(next=row_id)
        [(_, attempt, payload)] = fetch_rows(self.holder.using, sql.START_SQL, params)
        return Started.of(attempt, payload)
