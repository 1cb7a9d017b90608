"""Dedicated async listening connections (psycopg 3 only), for ``AsyncPubSub`` and the hub."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from django_pgpubsub.db.connection import dedicated_wrapper, require_psycopg3
from django_pgpubsub.db.drivers import standby_refusal_is_lost
from django_pgpubsub.db.libpq_statements import Statement, direct_statement
from django_pgpubsub.db.listening_connection import Psycopg3Queue, lost_errors
from django_pgpubsub.db.waits import wait_event
from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.vocabulary.events import Event


class AsyncDriverConnection(Psycopg3Queue):
    """An autocommit psycopg 3 ``AsyncConnection`` that receives notifications.

    Every method that touches the network raises :class:`ConnectionLost` when
    the connection is gone. Bound to the event loop it was opened in.
    """

    def __init__(self, raw: Any, alias: str) -> None:
        super().__init__(raw, alias)
        self._lock = asyncio.Lock()
        self._readable = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._fileno: int = raw.fileno()
        self._watching = False
        # The direct statement running, which the socket's reader wakes.
        self._statement: Statement | None = None
        self._finishing: asyncio.Task[None] | None = None
        self._watch()

    def _watch(self) -> None:
        if not self._watching and not self.raw.closed:
            self._loop.add_reader(self._fileno, self._on_readable)
            self._watching = True
        # Whatever psycopg read meanwhile is in the backlog: let waiters drain it.
        self._readable.set()

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._fileno)
            self._watching = False

    def _on_readable(self) -> None:
        statement = self._statement
        if statement is not None:
            # Its result, or a notification: the statement reads both, and
            # wakes the waiters after it if a notification came.
            statement.wake()
            return
        # Often a stale wake-up: the loop saw the socket readable just before
        # the statement read its result. Wake the waiters only for news.
        try:
            self.raw.pgconn.consume_input()
        except self._lost_errors as exc:
            self._lost = exc
            self._readable.set()
            return
        if self._keep_parsed():
            self._readable.set()

    def _keep_parsed(self) -> bool:
        """Move the notifications libpq parsed to the backlog; whether it holds any."""
        pgconn, encoding = self.raw.pgconn, self._encoding
        with contextlib.suppress(*self._lost_errors):
            while (notify := pgconn.notifies()) is not None:
                channel, payload = notify.relname.decode(encoding), notify.extra.decode(encoding)
                self._keep_notify(Event(channel, payload, notify.be_pid))
        return bool(self._during_statements)

    async def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> list[Any]:
        """Run one statement (one at a time); return its rows, if any.

        Cancelled, the statement still runs to its end in the background (the
        next one waits for it): the connection stays usable.
        """
        statement = direct_statement(self.raw, sql, params)
        if statement is None:
            return await self._execute_psycopg(sql, params)
        await self._lock.acquire()
        handed_over = False
        try:
            if not self.raw.closed:
                # Again: a statement on ``raw`` itself (an application's, through
                # AsyncPubSub.conn) removed the reader. Nearly free: no system call.
                self._loop.add_reader(self._fileno, self._on_readable)
                self._watching = True
            self._statement = statement
            try:
                return await statement.run(self._loop, self._fileno)
            except asyncio.CancelledError:
                if statement.running:
                    # Read its result in the background, still under the lock.
                    self._finishing = self._loop.create_task(self._finish(statement))
                    handed_over = True
                raise
        except self._lost_errors as exc:
            raise self._lost_in_statement(exc) from exc
        finally:
            if not handed_over:
                self._after_direct()

    async def _finish(self, statement: Statement) -> None:
        try:
            with contextlib.suppress(Exception):
                await statement.run(self._loop, self._fileno)
        finally:
            self._after_direct()

    def _after_direct(self) -> None:
        """The direct statement is over: keep what it read, wake the waiters if any."""
        self._statement = None
        self._lock.release()
        if self._keep_parsed() or self.raw.closed:  # a loss: drain() reports it
            self._readable.set()

    async def _execute_psycopg(self, sql: str, params: tuple[Any, ...] | None) -> list[Any]:
        async with self._lock:
            self._unwatch()
            self.raw.add_notify_handler(self._keep)
            try:
                cursor = await self.raw.execute(sql, params)
                return list(await cursor.fetchall()) if cursor.description else []
            except self._lost_errors as exc:
                raise self._lost_in_statement(exc) from exc
            finally:
                self.raw.remove_notify_handler(self._keep)
                self._watch()

    async def listen(self, channels: list[str], command: str = "LISTEN") -> None:
        """LISTEN (or UNLISTEN) ``channels``, one statement each, which works
        with every OPTIONS; a hot standby's refusal is a ``ConnectionLost``
        (see :meth:`DriverConnection.listen`)."""
        for channel in channels:
            with standby_refusal_is_lost(self.alias):
                await self.execute(f"{command} {self.quote_ident(channel)}")

    def drain(self) -> list[Event]:
        """Read what the socket holds, without blocking; return every queued event.

        Raises:
            ConnectionLost: The connection is gone and every notification
                received before that was returned by an earlier call.
        """
        # While a statement of another task runs, it reads the socket (psycopg,
        # or a direct Statement): reading it here would take the statement's
        # result from under it, which would then wait on the socket until the
        # next traffic.
        events = self._read_queue(consume=not self._lock.locked())
        if self._lost is not None:
            self._unwatch()  # a closed socket stays readable: stop the busy wake-ups
        return self._handed_over(events)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until something may have arrived; ``False`` once ``timeout`` passed."""
        readable = self._readable
        if not readable.is_set() and not await wait_event(readable, timeout):
            return False
        readable.clear()
        return True

    async def close(self) -> None:
        """Close the connection once the running statement is over (psycopg
        waits for a cancelled statement's end on the socket; closing it under
        that wait would hang it). Closing a closed or broken one is a no-op."""
        async with self._lock:
            self._unwatch()
            with contextlib.suppress(*self._lost_errors):
                await self.raw.close()


async def open_async_connection(
    using: str | None = None,
    *,
    options: dict[str, Any] | None = None,
    default_options: dict[str, Any] | None = None,
    what: str = "aconnect()",
) -> AsyncDriverConnection:
    """Open a new dedicated autocommit async connection for a ``DATABASES`` alias.

    Built from the parameters Django's own backend derives from the alias
    (HOST, PORT, NAME, USER, PASSWORD, OPTIONS), as :func:`open_connection`.

    Raises:
        ImproperlyConfigured: Django uses psycopg2; unknown alias; not PostgreSQL.
        ConnectionLost: PostgreSQL could not be reached.
    """
    require_psycopg3(what)
    import psycopg  # noqa: PLC0415 - psycopg 3 may not be installed

    wrapper = dedicated_wrapper(using, options=options, default_options=default_options)
    params = wrapper.get_connection_params()
    params.pop("cursor_factory", None)  # Django's is a sync cursor
    try:
        raw = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    except lost_errors() as exc:
        raise ConnectionLost(f"Cannot connect to database {wrapper.alias!r}: {exc}") from exc
    return AsyncDriverConnection(raw, wrapper.alias)
