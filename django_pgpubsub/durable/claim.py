"""One claim of durable events: taken in a statement that commits at once, then
handled event by event, each in a transaction of its own.

A :class:`Claim` is the lease on a batch of rows; an
:class:`~django_pgpubsub.durable.attempt.Attempt` is one event's handlers
and completion. See :mod:`django_pgpubsub.durable.outbox` for the whole cycle
and :mod:`django_pgpubsub.db.sql` for the statements.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import NamedTuple

from django_pgpubsub import conf
from django_pgpubsub.backoff import MAX_DELAY
from django_pgpubsub.db import sql
from django_pgpubsub.db.connection import fetch_rows
from django_pgpubsub.durable.attempt import Attempt, ClaimLost, Holder, retry_delay, sanitize
from django_pgpubsub.events import DurableEvent
from django_pgpubsub.observer import Observer
from django_pgpubsub.registry import Handler

logger = logging.getLogger("django_pgpubsub.durable")

__all__ = ["Claim", "ClaimLost", "Claimed", "retry_delay", "sanitize"]


class Claimed(NamedTuple):
    """One claimed row, as the claim statement returns it."""

    id: int
    channel: str
    payload: str
    sender_pid: int
    attempts: int  # the first row's attempt started with the claim


class Claim:
    """The lease on one batch of claimed events, handled one by one under one token."""

    def __init__(self, using: str, observer: Observer, *, prepare: bool = False) -> None:
        self.holder = Holder(
            using=using,
            token=str(uuid.uuid4()),
            lease=min(conf.durable_lease(), MAX_DELAY),
            prepare=prepare,
            observer=observer,
        )
        self.renewed = time.monotonic()

    def take(self, channels: list[str], size: int) -> list[Claimed]:
        """Claim up to ``size`` due events, oldest first; the first one's attempt starts."""
        params = self.holder.params(channels=channels, limit=size)
        rows = fetch_rows(self.holder.using, sql.CLAIM_SQL, params)
        self.renewed = time.monotonic()
        return sorted(Claimed(*row) for row in rows)

    def run(
        self,
        rows: Sequence[Claimed],
        handlers: dict[str, tuple[Handler, ...]],
        should_stop: Callable[[], bool],
        limit: int | None,
    ) -> int:
        """Handle ``rows`` in order, at most ``limit`` of them; give back the rest.

        Returns:
            How many events were handled, successfully or not.
        """
        started: int | None = rows[0].attempts if rows else None  # the claim started the first
        count = 0
        index = 0
        try:
            for index, row in enumerate(rows):
                if started is None:
                    if should_stop():
                        self.release(rows[index:])
                        return count
                    self._renew_if_due(rows[index:])
                    started = self._start(row.id)
                    if started is None:
                        logger.warning("Durable event %d was claimed by another listener.", row.id)
                        continue
                count += 1
                last = limit is not None and count >= limit
                following = (
                    None if last or index + 1 == len(rows) or should_stop() else rows[index + 1].id
                )
                event = DurableEvent(row.channel, row.payload, row.sender_pid, row.id, started)
                started = Attempt(self.holder, event).run(handlers[row.channel], following)
                if last:
                    self.release(rows[index + 1 :])
                    return count
        except BaseException:
            # Hand back what was never started, if the database still answers.
            try:
                self.release(rows[index:])  # started ones stay: recovery counts them
            except Exception:
                logger.debug("Cannot release the rest of a claim.", exc_info=True)
            raise
        return count

    def _renew_if_due(self, rows: Sequence[Claimed]) -> None:
        """Keep the leases of claimed events that wait for their turn."""
        now = time.monotonic()
        holder = self.holder
        if now - self.renewed > holder.lease / 3:
            self.renewed = now
            params = holder.params(ids=[row.id for row in rows])
            fetch_rows(holder.using, sql.RENEW_SQL, params)

    def release(self, rows: Sequence[Claimed]) -> None:
        """Give back claimed events that were not started, as they were."""
        if rows:
            params = self.holder.params(ids=[row.id for row in rows])
            fetch_rows(self.holder.using, sql.RELEASE_SQL, params)

    def _start(self, row_id: int) -> int | None:
        params = self.holder.params(next=row_id)
        [(_, attempt)] = fetch_rows(self.holder.using, sql.START_SQL, params)
        return None if attempt is None else int(attempt)
