"""The per-process hub: one LISTEN connection per database alias, shared by every subscriber
of the process (``subscribe()``, ``EventStreamView``, the Channels layer), on any loop or thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from django_pgpubsub import conf
from django_pgpubsub.db.aconnection import AsyncDriverConnection, open_async_connection
from django_pgpubsub.db.connection import listening_options, require_psycopg3
from django_pgpubsub.db.reconnect import Reconnection
from django_pgpubsub.exceptions import ConnectionLost, InvalidChannel
from django_pgpubsub.hub import fanout, runtime
from django_pgpubsub.hub.listen_rounds import Listening
from django_pgpubsub.hub.subscription import Subscription, resync_event
from django_pgpubsub.vocabulary.channel_names import validate_channel

logger = logging.getLogger("django_pgpubsub.hub")

APPLICATION_NAME = "django_pgpubsub hub"


class Hub:
    """The one LISTEN connection of this process to one database.

    Channels are LISTENed while a subscriber wants them and UNLISTENed when the
    last one leaves, by rounds (:mod:`~django_pgpubsub.hub.listen_rounds`). The
    connection is opened by the first subscriber and kept; when it breaks, the
    hub reconnects with the listener's backoff (``RECONNECT_*`` settings) and
    sends every subscriber a resync event.
    """

    def __init__(self, using: str) -> None:
        self.using = using
        self.connection: AsyncDriverConnection | None = None
        self._subscribers: dict[str, set[Subscription]] = {}
        self._listening = Listening(lambda: self.connection, self._subscribers.keys, self._prepare)
        self._reader: asyncio.Task[None] | None = None
        self._chores: dict[str, asyncio.Task[None]] = {}

    @property
    def listened(self) -> frozenset[str]:
        """The channels the hub's connection LISTENs to."""
        return frozenset(self._listening.channels)

    def subscriptions(self) -> set[Subscription]:
        """Every current subscription."""
        return set().union(*list(self._subscribers.values()))

    async def server_channels(self) -> list[str]:
        """``pg_listening_channels()`` of the hub's connection, asked of PostgreSQL."""
        return await runtime.call(self._server_channels())

    async def _server_channels(self) -> list[str]:
        if self.connection is None:
            return []
        rows = await self.connection.execute("SELECT pg_listening_channels()")
        return sorted(row[0] for row in rows)

    async def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> list[Any]:
        """Run one statement on the hub's connection (opened if need be).

        Raises:
            ConnectionLost: The connection is down.
        """
        return await runtime.call(self._execute(sql, params))

    async def _execute(self, sql: str, params: tuple[Any, ...] | None) -> list[Any]:
        if self._reader is None:
            await asyncio.shield(self._start_round())
        if self.connection is None:
            raise ConnectionLost(f"The hub has no connection to {self.using!r} now.")
        return await self.connection.execute(sql, params)

    async def schedule(
        self, name: str, interval: float, chore: Callable[[], Awaitable[object]]
    ) -> None:
        """Run ``chore`` on the hub's loop every ``interval`` seconds until the
        hub closes; nothing if a chore of that ``name`` runs already.

        Each run should be bounded work: the hub's thread waits for it. A run
        that raises is logged and the next one comes as usual.
        """
        await runtime.call(self._schedule(name, interval, chore))

    async def _schedule(
        self, name: str, interval: float, chore: Callable[[], Awaitable[object]]
    ) -> None:
        task = self._chores.get(name)
        if task is None or task.done():
            loop = asyncio.get_running_loop()
            self._chores[name] = loop.create_task(_repeat(name, interval, chore))

    async def subscribe(
        self, channels: Iterable[str], *, queue_size: int | None = None
    ) -> Subscription:
        """Subscribe to ``channels``; they are LISTENed to when this returns.

        The subscription delivers on the caller's event loop.

        Raises:
            InvalidChannel: No channel, or an unusable name.
            ConnectionLost: The first connection of the hub failed.
        """
        names = frozenset(validate_channel(channel) for channel in channels)
        if not names:
            raise InvalidChannel("Subscribe to at least one channel.")
        size = queue_size or conf.subscriber_queue_size()
        loop = asyncio.get_running_loop()
        subscription = Subscription(names, size, self.unsubscribe, loop)
        await self.attach(subscription)
        return subscription

    async def attach(self, subscription: Subscription) -> None:
        """Add ``subscription``; its channels are LISTENed to when this returns.

        Raises:
            ConnectionLost: The first connection of the hub failed.
        """
        try:
            await runtime.call(self._attach(subscription))
        except BaseException:
            subscription.close()
            raise

    async def _attach(self, subscription: Subscription) -> None:
        for name in subscription.channels:
            self._subscribers.setdefault(name, set()).add(subscription)
        # Shielded: cancelling this subscriber leaves the round to finish.
        await asyncio.shield(self._start_round())

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (from any thread); its channels are
        UNLISTENed in the background."""
        with contextlib.suppress(RuntimeError):  # the hub's loop is gone: so is the connection
            runtime.hub_loop().call_soon_threadsafe(self._release, subscription)

    def _release(self, subscription: Subscription) -> None:
        orphaned = False
        for name in subscription.channels:
            subscribers = self._subscribers.get(name)
            if subscribers is not None and subscription in subscribers:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[name]
                    orphaned = True
        if orphaned and self.connection is not None:
            self._start_round()

    def _start_round(self) -> asyncio.Task[None]:
        return self._listening.start_round()

    async def _prepare(self) -> None:
        """Open the connection and start reading it, if not yet done."""
        if self._reader is None:
            self._drop_connection()
            self.connection = await self._open()
            self._reader = asyncio.get_running_loop().create_task(self._run())

    async def _open(self) -> AsyncDriverConnection:
        return await open_async_connection(
            self.using,
            default_options=listening_options(APPLICATION_NAME),
            what="The hub (subscribe(), EventStreamView, the Channels layer)",
        )

    def _drop_connection(self) -> None:
        """Forget the connection and what it listened to (closed by the caller)."""
        self.connection = None
        self._listening.forget()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._serve()
                except ConnectionLost as exc:
                    logger.warning("Hub lost its connection to %r (%s).", self.using, exc)
                    try:
                        await self._reconnect()
                    except ConnectionLost:
                        return  # given up: subscribers were told
        except Exception:
            # Unexpected: end the subscribers' streams rather than leave them waiting.
            logger.exception("Hub for %r stopped on an unexpected error.", self.using)
            self._give_up(ConnectionLost("The hub stopped on an unexpected error."))
        finally:
            # Cancelled (the hub closes), given up, or stopped on an error.
            connection = self.connection
            self._drop_connection()
            if connection is not None:
                await connection.close()

    async def _serve(self) -> None:
        connection = self.connection
        assert connection is not None
        keepalive = conf.keepalive_interval()
        while True:
            events = connection.drain()
            if events:
                fanout.dispatch(events, self._subscribers, self._release)
            elif not await connection.wait(keepalive):
                # Idle: a query proves the connection alive, or fails now
                # instead of at the next TCP timeout.
                await connection.execute("SELECT 1")

    async def _reconnect(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        self._drop_connection()
        outage = Reconnection("Hub", self.using, logger)
        while True:
            try:
                self.connection = await self._open()
                break
            except ConnectionLost as exc:
                try:
                    delay = outage.failed(exc)
                except ConnectionLost:
                    self._give_up(exc)
                    raise
                await asyncio.sleep(delay)
        await asyncio.shield(self._start_round())
        logger.warning("Hub connected to %r again; resyncing subscribers.", self.using)
        fanout.dispatch([resync_event("reconnected")], self.subscriptions(), self._release)

    def _give_up(self, error: ConnectionLost) -> None:
        logger.error("Hub gives up on %r after repeated failures: %s", self.using, error)
        fanout.fail(self.subscriptions(), error)
        self._subscribers.clear()
        self._reader = None  # the next subscriber starts afresh

    async def close(self) -> None:
        """Stop the hub: close its connection and forget its subscriptions,
        which stop receiving; the next subscriber starts afresh."""
        await runtime.call(self._close())

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        chores = list(self._chores.values())
        self._chores.clear()
        for chore in chores:
            chore.cancel()
        for chore in chores:
            with contextlib.suppress(asyncio.CancelledError):
                await chore
        await self._listening.cancel()
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await reader
        self._subscribers.clear()
        connection = self.connection
        self._drop_connection()
        if connection is not None:
            await connection.close()


async def _repeat(name: str, interval: float, chore: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await chore()
        except ConnectionLost as exc:
            logger.warning("Hub chore %r could not run: %s", name, exc)
        except Exception:
            logger.exception("Hub chore %r failed.", name)


_hubs: dict[str, Hub] = {}
_hubs_lock = threading.Lock()


def get_hub(using: str | None = None) -> Hub:
    """The hub of this process for ``using``, whatever the calling loop or thread.

    Args:
        using: The ``DATABASES`` alias; default the ``LISTENER_DATABASE``
            setting (a direct connection: LISTEN does not work through
            PgBouncer in transaction pooling mode).
    """
    require_psycopg3("The hub (subscribe(), EventStreamView, the Channels layer)")
    alias = using or conf.listener_database()
    hub = _hubs.get(alias)
    if hub is None:
        with _hubs_lock:
            hub = _hubs.setdefault(alias, Hub(alias))
    return hub


def _forget_after_fork() -> None:
    _hubs.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


@asynccontextmanager
async def subscribe(
    *channels: str, using: str | None = None, queue_size: int | None = None
) -> AsyncIterator[Subscription]:
    """Receive the events of ``channels`` through this process's hub.

    The channels are listened to when the block starts; everything committed
    after that reaches the subscription (or a resync event says it may not
    have). Leaving the block, also by cancellation, releases it.

    Args:
        *channels: One or more channel names.
        using: The ``DATABASES`` alias; default ``LISTENER_DATABASE``.
        queue_size: Events kept for a slow reader; default ``SUBSCRIBER_QUEUE_SIZE``.

    Raises:
        ImproperlyConfigured: Django uses psycopg2, or ``using`` is unusable.
        InvalidChannel: No channel, or an unusable name.
        ConnectionLost: The hub's first connection failed.
    """
    subscription = await get_hub(using).subscribe(channels, queue_size=queue_size)
    try:
        yield subscription
    finally:
        subscription.close()
