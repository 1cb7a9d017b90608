"""What every listening connection shares, sync or async, psycopg2 or psycopg 3: a bounded
queue of the notifications received, and what a lost connection received before it broke.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from django.db.backends.postgresql.psycopg_any import errors, sql

from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.vocabulary.events import Event

logger = logging.getLogger("django_pgpubsub.connection")


def lost_errors() -> tuple[type[Exception], ...]:
    """The driver's errors for a connection that failed or broke."""
    return (errors.OperationalError, errors.InterfaceError)


class ListeningConnection:
    """An autocommit driver connection that receives notifications.

    Every method that touches the network raises :class:`ConnectionLost` when
    the connection is gone, except ``drain()``, which first hands over what
    was received before the loss.

    Of the notifications the driver reads while one of our statements runs,
    at most :attr:`MAX_UNREAD` wait for ``drain()``; past that the oldest are
    dropped, with one warning, so a connection that listens but is never read
    cannot grow without bound.
    """

    MAX_UNREAD = 100_000

    def __init__(self, raw: Any, alias: str) -> None:
        self.alias = alias
        self.raw = raw
        self.pid: int = raw.info.backend_pid
        self._lost_errors = lost_errors()
        self._lost: Exception | None = None
        self._warned_full = False

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)

    def quote_ident(self, name: str) -> str:
        """Quote ``name`` as an SQL identifier with the driver's own quoting."""
        return str(sql.Identifier(name).as_string(self.raw))

    def _warn_dropping_unread(self) -> None:
        """Say once per connection that unread notifications are being dropped."""
        if self._warned_full:
            return
        self._warned_full = True
        logger.warning(
            "Over %d notifications received on %r were not read; dropping the "
            "oldest. Read them (get_event()), or UNLISTEN.",
            self.MAX_UNREAD,
            self.alias,
        )

    def _lost_in_statement(self, exc: Exception) -> ConnectionLost:
        """Remember ``exc`` (``drain()`` still hands over what was read) and
        return the error to raise."""
        self._lost = exc
        return ConnectionLost(f"Connection to {self.alias!r} lost: {exc}")

    def _handed_over(self, events: list[Event]) -> list[Event]:
        """``events``, or :class:`ConnectionLost` once none is left of a lost connection."""
        if not events and self._lost is not None:
            raise ConnectionLost(f"Connection to {self.alias!r} lost: {self._lost}") from self._lost
        return events


class Psycopg3Queue(ListeningConnection):
    """psycopg 3: read libpq's queue directly; a handler catches the ones
    psycopg itself reads while one of our statements runs.

    The handler is installed only for our own statements: notifications
    psycopg reads for the application's own use of :attr:`raw` (its
    ``notifies()`` generator, its statements) are psycopg's, never copied
    here. Of those caught during our statements, at most :attr:`MAX_UNREAD`
    wait for ``drain()``.
    """

    def __init__(self, raw: Any, alias: str) -> None:
        super().__init__(raw, alias)
        self._during_statements: deque[Any] = deque(maxlen=self.MAX_UNREAD)
        self._keep = self._keep_notify  # one bound method, to add and remove
        self._encoding: str = raw.info.encoding

    def _keep_notify(self, notify: Any) -> None:
        backlog = self._during_statements
        if len(backlog) == backlog.maxlen:
            self._warn_dropping_unread()
        backlog.append(notify)

    def _read_queue(self, *, consume: bool) -> list[Event]:
        """What psycopg caught during our statements, then libpq's queue.

        Args:
            consume: Read the socket into libpq's queue first (not while
                psycopg runs a statement: it would take its result).
        """
        pgconn = self.raw.pgconn
        if consume:
            try:
                pgconn.consume_input()
            except self._lost_errors as exc:
                self._lost = exc  # what libpq parsed before the loss is still queued
        backlog = self._during_statements
        events = [Event(n.channel, n.payload, n.pid) for n in backlog]
        backlog.clear()
        encoding = self._encoding
        try:
            while (notify := pgconn.notifies()) is not None:
                events.append(
                    Event(
                        notify.relname.decode(encoding),
                        notify.extra.decode(encoding),
                        notify.be_pid,
                    )
                )
        except self._lost_errors as exc:
            self._lost = self._lost or exc
        return events
