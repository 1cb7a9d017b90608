"""The listener's side of durable events: each :meth:`Outbox.sweep` is a bounded turn that claims
due events and handles them in groups (a transaction per group, a savepoint per event), and
periodically takes back the claims of dead or hung listeners. The cycle: docs/internals.rst.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import connections

from django_pgpubsub import conf
from django_pgpubsub.db import claim_sql, ordering_sql, sql
from django_pgpubsub.db.connection import fetch_rows
from django_pgpubsub.db.reconnect import MAX_DELAY
from django_pgpubsub.durable.claim import Claim
from django_pgpubsub.vocabulary.handlers import Handler
from django_pgpubsub.vocabulary.observer import Observer

logger = logging.getLogger("django_pgpubsub.durable")


# Seconds of durable work per turn of the listener's loop.
TURN = 0.1
# Ordering keys with events behind their head that one repair visits at most
# (see ordering_sql.REPAIR_SQL): a few milliseconds of index probes.
REPAIR_KEYS = 1000


class Outbox:
    """The outbox of one database, as a listener sweeps it."""

    def __init__(self, using: str, observer: Observer | None = None) -> None:
        """
        Args:
            using: The outbox's ``DATABASES`` alias.
            observer: Told of each event handled.
        """
        self.using = using
        self.observer = observer or Observer()
        self.holder_key: int | None = None
        self._claim: Claim | None = None
        self._full = False  # the last claim was full: more may be due at once
        self._retry_at: float | None = None
        self._exists = False
        self._warned = False
        self._repaired_after = ""  # where the next repair goes on from

    @property
    def backlog(self) -> bool:
        """True while more events may be due at once: a claim is not handled to
        its end, or the last one was full."""
        return self._claim is not None or self._full

    def held_by(self, holder_key: int | None) -> None:
        """Claim from now on under ``holder_key``: the advisory lock that the
        listener took on its new listening connection (``claim_sql.HOLD_SQL``).

        The current claim, taken under the previous key, which no session
        holds any more, is given back.
        """
        self.release()
        self.holder_key = holder_key

    def release(self) -> None:
        """Give back what the current claim has not started (the listener stops).

        Never raises but ``SystemExit`` and ``KeyboardInterrupt``.
        """
        claim, self._claim = self._claim, None
        self._full = False
        if claim is not None:
            try:
                claim.release()
            except Exception:
                logger.warning("Cannot give back a claim of durable events now.", exc_info=True)
                connections[self.using].close_if_unusable_or_obsolete()

    def next_retry(self) -> float | None:
        """The ``time.monotonic()`` at which the earliest retry recorded since
        the last call comes due, if any: the listener sweeps then."""
        retry_at, self._retry_at = self._retry_at, None
        return retry_at

    def _retry(self, retry_at: float | None) -> None:
        if retry_at is not None:
            self._retry_at = min(self._retry_at or retry_at, retry_at)

    def sweep(
        self,
        handlers: dict[str, tuple[Handler, ...]],
        should_stop: Callable[[], bool],
        limit: int | None,
        *,
        recover: bool = False,
    ) -> int:
        """Handle due events of the channels that have handlers, for one turn.

        A turn ends after about ``TURN`` seconds (the running event is
        finished), when nothing more is due, at ``should_stop()`` or after
        ``limit`` events; :attr:`backlog` then says whether to call again.

        Never raises but ``SystemExit`` and ``KeyboardInterrupt``: any other
        error is logged, and the next sweep tries again.

        Args:
            handlers: Channel -> handlers. Channels without handlers are
                never claimed.
            should_stop: Checked after each event.
            limit: Handle at most this many events.
            recover: First take back the claims of dead or hung listeners.

        Returns:
            How many events were handled, successfully or not.
        """
        channels = sorted(channel for channel, functions in handlers.items() if functions)
        handled = 0
        if not channels:
            return 0
        deadline = time.monotonic() + TURN
        try:
            if not self._table_exists():
                return 0
            if recover:
                self._recover(channels)
                self._repair()
            while not should_stop() and time.monotonic() < deadline:
                remaining = None if limit is None else limit - handled
                claim = self._claim or self._take(channels, remaining)
                if claim is None:
                    break
                handled += claim.run(handlers, should_stop, remaining, deadline)
                self._retry(claim.retry_at)
                claim.retry_at = None
                if not claim.done:
                    break  # the deadline: the rest is for the next turn
                self._claim = None
                if not self._full or remaining == handled:
                    break
        except Exception:
            logger.exception(
                "Cannot handle durable events on %r now; the next sweep tries again.", self.using
            )
            self._exists = False  # a dropped table is looked for again, too
            self._claim = None
            self._full = False
            connections[self.using].close_if_unusable_or_obsolete()
        if should_stop():
            self.release()
        return handled

    def _take(self, channels: list[str], limit: int | None) -> Claim | None:
        size = conf.durable_batch_size() if limit is None else min(conf.durable_batch_size(), limit)
        self._full = False
        if size <= 0:
            return None
        claim = Claim(
            self.using,
            self.observer,
            holder_key=self.holder_key,
        )
        claimed = claim.take(channels, size)
        # A claim of keyed events is followed by another: the keys' next
        # events became due as these were handled (see Claim.keyed).
        self._full = claimed == size or claim.keyed
        if not claimed:
            return None
        self._claim = claim
        return claim

    def due(self, handlers: dict[str, tuple[Handler, ...]]) -> bool:
        """Whether any event of the channels with handlers is due (poll mode's probe).

        Never raises but ``SystemExit`` and ``KeyboardInterrupt``.
        """
        channels = sorted(channel for channel, functions in handlers.items() if functions)
        if not channels:
            return False
        try:
            if not self._table_exists():
                return False
            return bool(self._fetch(sql.DUE_SQL, (channels,))[0][0])
        except Exception:
            logger.exception("Cannot probe the outbox on %r now.", self.using)
            self._exists = False
            connections[self.using].close_if_unusable_or_obsolete()
            return False

    def _table_exists(self) -> bool:
        """Look for the migrated outbox until it is there: migrate may run after
        the listener starts."""
        if not self._exists:
            [(ready,)] = self._fetch(sql.OUTBOX_READY_SQL)
            self._exists = bool(ready)
            if not self._exists and not self._warned:
                self._warned = True
                logger.warning(
                    "No outbox table on %r: durable events are "
                    "not handled until `manage.py migrate django_pgpubsub` completes.",
                    self.using,
                )
            elif self._exists and self._warned:
                self._warned = False
                logger.warning("The outbox table on %r is ready now.", self.using)
        return self._exists

    def _fetch(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        return fetch_rows(self.using, statement, params)

    def _recover(self, channels: list[str]) -> None:
        rows = self._fetch(
            claim_sql.RECOVER_SQL,
            {
                "channels": channels,
                "max_attempts": conf.durable_max_attempts(),
                "delay": min(conf.durable_retry_delay(), MAX_DELAY),
                "max_delay": min(conf.durable_retry_max_delay(), MAX_DELAY),
            },
        )
        now = time.monotonic()
        dead: list[str] = []
        for row_id, state, due_in, ordering_key in rows:
            logger.warning(
                "Durable event %d was held by a listener that is gone or past its "
                "DURABLE_LEASE; it is %s again.",
                row_id,
                state,
            )
            if state == "pending":
                self._retry(now + due_in)
            elif ordering_key is not None:
                dead.append(ordering_key)
        if dead and conf.ordering_on_dead_letter() == "continue":
            params = {"keys": dead, "blocking": conf.ordering_blocking_states()}
            self._fetch(ordering_sql.PROMOTE_SQL, params)

    def _repair(self) -> None:
        """Move on the ordering keys whose next event stays ``behind`` with
        nothing before it (a lost wake-up: see docs/internals.rst),
        a bounded walk of the keys at a time; the claim that follows takes them.
        """
        params = {
            "after": self._repaired_after,
            "keys": REPAIR_KEYS,
            "blocking": conf.ordering_blocking_states(),
            "wake": conf.durable_wakeup() == "notify",
        }
        [(walked, last, promoted, _)] = self._fetch(ordering_sql.REPAIR_SQL, params)
        self._repaired_after = last if walked >= REPAIR_KEYS else ""
        if promoted:
            logger.info(
                "%d durable event(s) with an ordering key waited behind nothing (stored "
                "while their key's previous event was being handled); they are due now.",
                promoted,
            )
