"""Driver connections that receive notifications, psycopg2 and psycopg 3: the rest of the
package talks to a :class:`DriverConnection`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from django.db.backends.postgresql.psycopg_any import errors

from django_pgpubsub.db.listening_connection import (
    ListeningConnection,
    Psycopg3Queue,
)
from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.vocabulary.events import Event

# SQLSTATE 25006 (read_only_sql_transaction): "cannot execute LISTEN during
# recovery" from a hot standby, where a reconnect may land after a failover.
READ_ONLY_SQLSTATE = "25006"


class DriverConnection(ListeningConnection, ABC):
    """A sync listening connection; subclasses adapt one driver."""

    def __init__(self, raw: Any, alias: str) -> None:
        raw.autocommit = True
        super().__init__(raw, alias)

    def fileno(self) -> int:
        """The socket to wait on for incoming notifications."""
        try:
            return int(self.raw.fileno())
        except self._lost_errors as exc:
            raise ConnectionLost(f"Connection to {self.alias!r} is closed.") from exc

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] | None = None) -> None:
        """Run one statement, discarding any result.

        Notifications the driver reads meanwhile are kept for :meth:`drain`,
        even when the statement finds the connection broken.
        """
        try:
            with self.raw.cursor() as cursor:
                cursor.execute(sql, params)
        except self._lost_errors as exc:
            raise self._lost_in_statement(exc) from exc

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
        return self._handed_over(self._read())

    @abstractmethod
    def _read(self) -> list[Event]:
        """Return every notification received so far; on a broken connection,
        set ``_lost`` instead of raising."""

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


class Psycopg3Connection(Psycopg3Queue, DriverConnection):
    """psycopg 3, sync: see :class:`~django_pgpubsub.db.listening_connection.Psycopg3Queue`."""

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] | None = None) -> None:
        self.raw.add_notify_handler(self._keep)
        try:
            super().execute(sql, params)
        finally:
            self.raw.remove_notify_handler(self._keep)

    def _read(self) -> list[Event]:
        return self._read_queue(consume=True)


def fetch(raw_connection: Any, statement: str, params: Any) -> list[Any]:
    """Run ``statement`` on a driver connection; return its rows (none: ``[]``).

    Args:
        raw_connection: The driver's connection (a Django connection's
            ``connection`` attribute).
        statement: SQL with ``%s`` or ``%(name)s`` placeholders.
        params: Its parameters.
    """
    with raw_connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def standby_refusal_is_lost(alias: str) -> Iterator[None]:
    """Raise ``ConnectionLost`` when the block's LISTEN is refused by a hot
    standby: a failover may follow, so the caller reconnects and retries.
    Other driver errors pass through."""
    try:
        yield
    except errors.Error as exc:
        # psycopg 3 names it sqlstate, psycopg2 pgcode.
        sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if sqlstate != READ_ONLY_SQLSTATE:
            raise
        raise ConnectionLost(
            f"Database {alias!r} refuses LISTEN ({str(exc).strip()}): it is a read-only "
            "standby. Reach the primary, e.g. with "
            "OPTIONS={'target_session_attrs': 'read-write'} and every node in HOST."
        ) from exc
