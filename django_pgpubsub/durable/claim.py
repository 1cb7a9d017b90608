"""One claim of durable events: rows leased under one token by a statement that commits at
once, then handled group by group; :func:`run_now` is eager mode's way into the same cycle.
"""

from __future__ import annotations

import collections
import logging
import math
import time
import uuid
from collections.abc import Callable

from django_pgpubsub import conf
from django_pgpubsub.db import claim_sql, ordering_sql, sql
from django_pgpubsub.db.connection import fetch_rows
from django_pgpubsub.db.reconnect import MAX_DELAY
from django_pgpubsub.durable.attempt import (
    Claimed,
    Holder,
    retry_delay,
    sanitize,
)
from django_pgpubsub.durable.group import GROUP_MAX, Failure, Group
from django_pgpubsub.vocabulary.handlers import Handler
from django_pgpubsub.vocabulary.observer import Observer

logger = logging.getLogger("django_pgpubsub.durable")

__all__ = ["Claim", "Claimed", "retry_delay", "sanitize"]

# The first group's size; each group that ends for lack of time sets the
# next one's to what it handled, each that handles all its events doubles it.
FIRST_GROUP = 8


class Claim:
    """The lease on one batch of claimed events, handled group by group under one token.

    Args:
        using: The outbox's alias.
        observer: Told of each event handled.
        holder_key: The key of the advisory lock that the listener holds on
            its listening connection while it lives (see ``claim_sql.HOLD_SQL``);
            None: the claim has its lease alone.
        only: Claim among these ids only (eager mode: the events a
            transaction stored); None: any due event of the channels.
        retry_at_once: A failed attempt is due again at once (eager mode).
    """

    def __init__(
        self,
        using: str,
        observer: Observer,
        *,
        holder_key: int | None = None,
        only: list[int] | None = None,
        retry_at_once: bool = False,
    ) -> None:
        self.holder = Holder(
            using=using,
            token=str(uuid.uuid4()),
            lease=min(conf.durable_lease(), MAX_DELAY),
            observer=observer,
            retry_at_once=retry_at_once,
        )
        self.only = only
        # The failures of last attempts (dead letters), as they come.
        self.dead: list[Failure] = []
        self.holder_key = holder_key
        self.waiting: collections.deque[Claimed] = collections.deque()
        self.started = False  # waiting[0]'s attempt started (with the claim)
        self.renewed = time.monotonic()
        self.retry_at: float | None = None  # monotonic time of the earliest retry recorded
        self.size = FIRST_GROUP
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
            only=self.only,
        )
        rows = sorted(
            Claimed(*row) for row in fetch_rows(self.holder.using, claim_sql.CLAIM_SQL, params)
        )
        self.renewed = time.monotonic()
        self.waiting.extend(rows)
        self.keyed = any(row.ordering_key is not None for row in rows)
        if rows:
            self.started = True
        return len(rows)

    def run(
        self,
        handlers: dict[str, tuple[Handler, ...]],
        should_stop: Callable[[], bool],
        limit: int | None,
        deadline: float,
    ) -> int:
        """Handle the claimed events in order, group by group, until one of these
        comes first:

        * every one is handled;
        * ``should_stop()`` or ``limit`` events: the rest is given back;
        * ``time.monotonic()`` reaches ``deadline``: the rest stays claimed,
          for the next call. The event whose attempt the claim started (its
          first) is handled in this call.

        Returns:
            How many events were handled, successfully or not.
        """
        count = 0
        clock = time.monotonic
        waiting = self.waiting

        def stop() -> bool:
            return clock() >= deadline or should_stop()

        try:
            while waiting:
                if not self.started:
                    if count == limit or should_stop():
                        self.release()
                        return count
                    if clock() >= deadline:
                        return count
                self._renew_if_due()
                size = self.size if limit is None else min(self.size, limit - count)
                group = self._group(max(size, 1))
                outcome = group.run(handlers, stop)
                self.started = False
                count += len(outcome.handled)
                ran = len(outcome.handled) + len(outcome.lost) + len(outcome.isolated)
                self._drop({*outcome.handled, *outcome.lost, *outcome.isolated})
                if outcome.isolated:
                    # Pending again, due now: claimed at the next sweep.
                    self.retry_at = clock()
                self._promote_dead_letters(group, outcome.failures)
                if waiting:
                    for channel in group.keyed_channels(outcome.handled):
                        self._wake(channel)
                self.size = min(GROUP_MAX, ran * 2) if not outcome.back else max(ran, 1)
                for failure in outcome.failures:
                    if failure.event.attempt >= conf.durable_max_attempts():
                        self.dead.append(failure)
                    else:
                        retry_at = clock() + failure.delay
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

    def _group(self, size: int) -> Group:
        """The next group: the first waiting event if it must run alone, else
        the waiting events up to ``size`` and the first that must run alone;
        its attempts started."""
        waiting = self.waiting
        rows = [waiting[0]]
        if not waiting[0].alone:
            for row in list(waiting)[1:size]:
                if row.alone:
                    break
                rows.append(row)
        group = Group(self.holder, rows)
        lost = set(group.start())
        if lost:
            logger.warning("Durable events %s were claimed by another listener.", sorted(lost))
            self._drop(lost)
        return group

    def _promote_dead_letters(self, group: Group, failures: list[Failure]) -> None:
        """Under ``ORDERING_ON_DEAD_LETTER = "continue"``, let the keys of the
        group's dead letters (committed now) move on to their next events."""
        if not failures or conf.ordering_on_dead_letter() != "continue":
            return
        last = conf.durable_max_attempts()
        dead = {f.event.id for f in failures if f.event.attempt >= last}
        keys = sorted({r.ordering_key for r in group.rows if r.id in dead and r.ordering_key})
        if keys:
            params = {"keys": keys, "blocking": conf.ordering_blocking_states()}
            fetch_rows(self.holder.using, ordering_sql.PROMOTE_SQL, params)

    def _drop(self, ids: set[int]) -> None:
        """Forget the claimed events ``ids`` (handled, or lost), keeping the order."""
        kept = [row for row in self.waiting if row.id not in ids]
        self.waiting.clear()
        self.waiting.extend(kept)

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
            fetch_rows(holder.using, claim_sql.RENEW_SQL, params)

    def release(self) -> None:
        """Give back the claimed events that were not started, as they were."""
        waiting = self.waiting
        if waiting:
            params = self.holder.params(ids=[row.id for row in waiting])
            waiting.clear()
            self.started = False
            fetch_rows(self.holder.using, claim_sql.RELEASE_SQL, params)


def run_now(using: str, ids: list[int], handlers: dict[str, tuple[Handler, ...]]) -> list[Failure]:
    """Handle the durable events ``ids`` now, in this thread, as a listener
    would: the same claims, groups, attempts and refusals, ordering keys
    included. Eager mode's durable cycle: a failed attempt is retried at
    once, until the event succeeds or fails its last attempt; an event that
    a listener would not take now (its key's line is held) stays pending.

    Returns:
        The failures of last attempts (the events left ``failed``).
    """
    channels = sorted(channel for channel, functions in handlers.items() if functions)
    if not channels or not ids:
        return []
    claim = Claim(using, Observer(), only=ids, retry_at_once=True)
    # Each turn handles or fails at least one event, while any is due.
    for _ in range(len(ids) * (conf.durable_max_attempts() + 1)):
        if not claim.take(channels, len(ids)):
            break
        claim.run(handlers, lambda: False, None, math.inf)
    return claim.dead
