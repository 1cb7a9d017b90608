"""Driver connections that receive notifications: psycopg2 and psycopg 3.

The differences between the two drivers on a dedicated connection live here:
the rest of the package talks to a :class:`DriverConnection`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_pgpubsub.events import Event
from django_pgpubsub.exceptions import ConnectionLost

logger = logging.getLogger("django_pgpubsub.connection")

# SQLSTATE 25006 (read_only_sql_transaction): "cannot execute LISTEN during
# recovery" from a hot standby, where a reconnect may land after a failover.
READ_ONLY_SQLSTATE = "25006"


class DriverConnection(ABC):
    """An autocommit driver connection that receives notifications.

    Subclasses adapt one driver. Every method that touches the network raises
    :class:`ConnectionLost` when the connection is gone, except :meth:`drain`,
    which first hands over what was received before the loss.

    Of the notifications the driver reads while one of our statements runs,
    at most :attr:`MAX_UNREAD` wait for :meth:`drain`; past that the oldest
    are dropped, with one warning, so a connection that listens but is never
    read cannot grow without bound.
    """

    MAX_UNREAD = 100_000

    def __init__(self, wrapper: BaseDatabaseWrapper) -> None:
        self.alias: str = wrapper.alias
        self.raw: Any = wrapper.connection
        self.raw.autocommit = True
        self._lost_errors = lost_errors()
        self._lost: Exception | None = None
        self._warned_full = False
        self.pid: int = self.raw.info.backend_pid

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

    def fileno(self) -> int:
        """The socket to wait on for incoming notifications."""
        try:
            return int(self.raw.fileno())
        except self._lost_errors as exc:
            raise ConnectionLost(f"Connection to {self.alias!r} is closed.") from exc

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] | None = None) -> None:
        """Run one statement, discarding any result.

        Notifications the driver reads meanwhile are kept for :meth:`drain`,
        even when the statement finds the connection broken.
        """
        try:
            with self.raw.cursor() as cursor:
                cursor.execute(sql, params)
        except self._lost_errors as exc:
            self._lost = exc
            raise ConnectionLost(f"Connection to {self.alias!r} lost: {exc}") from exc

    def listen(self, channels: list[str]) -> None:
        """LISTEN on ``channels``, one statement each.

        One statement each works with every valid OPTIONS: psycopg 3 may
        prepare a statement (``prepare_threshold``), and PostgreSQL refuses to
        prepare several commands at once.

        Raises:
            ConnectionLost: The connection broke, or the server is a hot
                standby, which refuses LISTEN (retry: a failover may follow).
        """
        for channel in channels:
            with standby_refusal_is_lost(self.alias):
                self.execute(f"LISTEN {self.quote_ident(channel)}")

    def drain(self) -> list[Event]:
        """Read what the socket holds, without blocking; return every queued event.

        Raises:
            ConnectionLost: The connection is gone and every notification
                received before that was returned by an earlier call.
        """
        events = self._read()
        if not events and self._lost is not None:
            raise ConnectionLost(f"Connection to {self.alias!r} lost: {self._lost}") from self._lost
        return events

    @abstractmethod
    def _read(self) -> list[Event]:
        """Return every notification received so far; on a broken connection,
        set ``_lost`` instead of raising."""

    @abstractmethod
    def quote_ident(self, name: str) -> str:
        """Quote ``name`` as an SQL identifier with the driver's own quoting."""

    def close(self) -> None:
        """Close the connection; closing a closed or broken one is a no-op."""
        with contextlib.suppress(*self._lost_errors):
            self.raw.close()


class Psycopg2Connection(DriverConnection):
    """psycopg2: ``poll()`` and every statement move notifications into the
    ``notifies`` list; after each of our statements it is cut to
    :attr:`MAX_UNREAD`, oldest first."""

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] | None = None) -> None:
        try:
            super().execute(sql, params)
        finally:
            notifies = self.raw.notifies
            excess = len(notifies) - self.MAX_UNREAD
            if excess > 0:
                self._warn_dropping_unread()
                del notifies[:excess]

    def _read(self) -> list[Event]:
        raw = self.raw
        try:
            raw.poll()
        except self._lost_errors as exc:
            self._lost = exc
        notifies = raw.notifies
        if not notifies:
            return []
        events = [Event(n.channel, n.payload, n.pid) for n in notifies]
        notifies.clear()
        return events

    def quote_ident(self, name: str) -> str:
        from psycopg2.extensions import quote_ident  # noqa: PLC0415

        return str(quote_ident(name, self.raw))


class Psycopg3Connection(DriverConnection):
    """psycopg 3: read libpq's queue directly; a handler catches the ones
    psycopg itself reads while one of our statements runs.

    The handler is installed only for our own statements: notifications
    psycopg reads for the application's own use of :attr:`raw` (its
    ``notifies()`` generator, its statements) are psycopg's, never copied
    here. Of those caught during our statements, at most :attr:`MAX_UNREAD`
    wait for :meth:`drain`.
    """

    def __init__(self, wrapper: BaseDatabaseWrapper) -> None:
        super().__init__(wrapper)
        self._during_statements: deque[Any] = deque(maxlen=self.MAX_UNREAD)
        self._keep = self._keep_notify  # one bound method, to add and remove
        self._encoding: str = self.raw.info.encoding

    def _keep_notify(self, notify: Any) -> None:
        backlog = self._during_statements
        if len(backlog) == backlog.maxlen:
            self._warn_dropping_unread()
        backlog.append(notify)

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] | None = None) -> None:
        self.raw.add_notify_handler(self._keep)
        try:
            super().execute(sql, params)
        finally:
            self.raw.remove_notify_handler(self._keep)

    def _read(self) -> list[Event]:
        pgconn = self.raw.pgconn
        try:
            pgconn.consume_input()
        except self._lost_errors as exc:
            self._lost = exc  # what libpq parsed before the loss is still queued
        events, lost = queued_events(pgconn, self._during_statements, self._encoding)
        self._lost = self._lost or lost
        return events

    def quote_ident(self, name: str) -> str:
        from psycopg import sql  # noqa: PLC0415

        return sql.Identifier(name).as_string(self.raw)


def queued_events(
    pgconn: Any, backlog: deque[Any], encoding: str
) -> tuple[list[Event], Exception | None]:
    """Take what psycopg 3 caught during our statements, then libpq's queue.

    Args:
        pgconn: The connection's libpq ``PGconn`` (input already consumed).
        backlog: Notifications psycopg's handler kept; emptied.
        encoding: The connection's client encoding.

    Returns:
        The events, oldest first, and the error raised by a connection that
        was closed meanwhile (``None`` if it was not).
    """
    events = [Event(n.channel, n.payload, n.pid) for n in backlog]
    backlog.clear()
    try:
        while (notify := pgconn.notifies()) is not None:
            events.append(
                Event(notify.relname.decode(encoding), notify.extra.decode(encoding), notify.be_pid)
            )
    except lost_errors() as exc:
        return events, exc
    return events, None


def driver_module() -> Any:
    """The driver module Django uses."""
    if is_psycopg3:
        import psycopg  # noqa: PLC0415

        return psycopg
    import psycopg2  # noqa: PLC0415

    return psycopg2


def fetch(raw_connection: Any, statement: str, params: Any, *, prepare: bool) -> list[Any]:
    """Run ``statement`` on a driver connection; return its rows (none: ``[]``).

    Args:
        raw_connection: The driver's connection (a Django connection's
            ``connection`` attribute).
        statement: SQL with ``%s`` or ``%(name)s`` placeholders.
        params: Its parameters.
        prepare: Prepare the statement on the server once per connection
            (psycopg 3: bound and prepared by the protocol; psycopg2: SQL's
            ``PREPARE``, then ``EXECUTE``), so it is parsed and planned once.
            Only for a connection that reaches PostgreSQL directly or through
            a session pooler: a transaction pooler may run the next statement
            on another server connection, which lacks it.
    """
    if prepare and not is_psycopg3:
        statement, params = _prepared_psycopg2(raw_connection, statement, params)
    elif prepare:
        import psycopg  # noqa: PLC0415

        threshold = raw_connection.prepare_threshold
        # None (Django's default, for transaction poolers) makes psycopg ignore
        # prepare=True; a threshold never reached honours it and still
        # prepares nothing else.
        raw_connection.prepare_threshold = sys.maxsize if threshold is None else threshold
        try:
            with psycopg.Cursor(raw_connection) as cursor:
                cursor.execute(statement, params, prepare=True)
                return cursor.fetchall() if cursor.description else []
        finally:
            raw_connection.prepare_threshold = threshold
    with raw_connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


# What was prepared on each psycopg2 connection: statement -> (its EXECUTE,
# the names of its parameters in order). PREPARE outlives a rollback; a
# connection that closes drops out by itself.
_psycopg2_prepared: weakref.WeakKeyDictionary[Any, dict[str, tuple[str, list[str]]]] = (
    weakref.WeakKeyDictionary()
)
_NAMED_PARAMETER = re.compile(r"%\((\w+)\)s")


def _prepared_psycopg2(
    raw_connection: Any, statement: str, params: dict[str, Any]
) -> tuple[str, list[Any]]:
    """``EXECUTE`` of ``statement`` (``%(name)s`` placeholders) and its
    parameters, prepared with SQL's ``PREPARE`` on this connection first if
    need be."""
    prepared = _psycopg2_prepared.setdefault(raw_connection, {})
    known = prepared.get(statement)
    if known is None:
        name = f"django_pgpubsub_{len(prepared)}"
        keys = _NAMED_PARAMETER.findall(statement)
        numbered = iter(range(1, len(keys) + 1))
        body = _NAMED_PARAMETER.sub(lambda _: f"${next(numbered)}", statement)
        with raw_connection.cursor() as cursor:
            cursor.execute(f"PREPARE {name} AS {body}")
        known = prepared[statement] = (f"EXECUTE {name}({', '.join(['%s'] * len(keys))})", keys)
    execute, keys = known
    return execute, [params[key] for key in keys]


@contextlib.contextmanager
def standby_refusal_is_lost(alias: str) -> Iterator[None]:
    """Raise ``ConnectionLost`` when the block's LISTEN is refused by a hot
    standby: a failover may follow, so the caller reconnects and retries.
    Other driver errors pass through."""
    try:
        yield
    except driver_module().Error as exc:
        # psycopg 3 names it sqlstate, psycopg2 pgcode.
        sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if sqlstate != READ_ONLY_SQLSTATE:
            raise
        raise ConnectionLost(
            f"Database {alias!r} refuses LISTEN ({str(exc).strip()}): it is a read-only "
            "standby. Reach the primary, e.g. with "
            "OPTIONS={'target_session_attrs': 'read-write'} and every node in HOST."
        ) from exc


def lost_errors() -> tuple[type[Exception], ...]:
    """The driver's errors for a connection that failed or broke."""
    driver = driver_module()
    return (driver.OperationalError, driver.InterfaceError)
