"""The per-process hub: one LISTEN connection per database alias, shared by
every async subscriber (each ``EventStreamView`` client, anything using
:func:`subscribe`).

Before PostgreSQL 19 every listening backend is woken by every NOTIFY, and a
connection per browser tab soon exhausts ``max_connections``: so a process
listens once, and fans events out to its subscribers' bounded queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from django_pgpubsub import conf
from django_pgpubsub.backoff import Reconnection
from django_pgpubsub.channels import validate_channel
from django_pgpubsub.db.aconnection import AsyncDriverConnection, open_async_connection
from django_pgpubsub.db.connection import listening_options, require_psycopg3
from django_pgpubsub.exceptions import ConnectionLost, InvalidChannel
from django_pgpubsub.streams.subscription import Subscription, resync_event

logger = logging.getLogger("django_pgpubsub.hub")

APPLICATION_NAME = "django_pgpubsub hub"


class Hub:
    """One LISTEN connection of this process and event loop to one database.

    Channels are LISTENed while a subscriber wants them and UNLISTENed when the
    last one leaves. The connection is opened by the first subscriber and kept;
    when it breaks, the hub reconnects with the listener's backoff
    (``RECONNECT_*`` settings) and sends every subscriber a resync event.
    """

    def __init__(self, using: str) -> None:
        self.using = using
        self.connection: AsyncDriverConnection | None = None
        self._subscribers: dict[str, set[Subscription]] = {}
        self._listened: set[str] = set()
        self._lock = asyncio.Lock()  # one LISTEN/UNLISTEN round at a time
        self._reader: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def listened(self) -> frozenset[str]:
        """The channels the hub's connection LISTENs to."""
        return frozenset(self._listened)

    def subscriptions(self) -> set[Subscription]:
        """Every current subscription."""
        return {s for subscribers in self._subscribers.values() for s in subscribers}

    async def server_channels(self) -> list[str]:
        """``pg_listening_channels()`` of the hub's connection, asked of PostgreSQL."""
        if self.connection is None:
            return []
        rows = await self.connection.execute("SELECT pg_listening_channels()")
        return sorted(row[0] for row in rows)

    async def subscribe(
        self, channels: Iterable[str], *, queue_size: int | None = None
    ) -> Subscription:
        """Subscribe to ``channels``; they are LISTENed to when this returns.

        Raises:
            InvalidChannel: No channel, or an unusable name.
            ConnectionLost: The first connection of the hub failed.
        """
        names = frozenset(validate_channel(channel) for channel in channels)
        if not names:
            raise InvalidChannel("Subscribe to at least one channel.")
        size = queue_size or conf.subscriber_queue_size()
        subscription = Subscription(names, size, self.unsubscribe)
        for name in names:
            self._subscribers.setdefault(name, set()).add(subscription)
        try:
            if self._reader is None:
                connection = await self._open()
                if self._reader is None:  # another subscriber may have started it
                    self.connection = connection
                    self._reader = asyncio.get_running_loop().create_task(self._run())
                else:
                    await connection.close()
            await self._reconcile()
        except BaseException:
            subscription.close()
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription``; its channels are UNLISTENed in the background."""
        orphaned = False
        for name in subscription.channels:
            subscribers = self._subscribers.get(name)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[name]
                    orphaned = True
        if orphaned and self.connection is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # the loop is gone, and the connection with it
            # Not awaited: this runs in the finally of a cancelled request.
            task = loop.create_task(self._reconcile())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _open(self) -> AsyncDriverConnection:
        return await open_async_connection(
            self.using,
            default_options=listening_options(APPLICATION_NAME),
            what="The hub (subscribe(), EventStreamView)",
        )

    async def _reconcile(self) -> None:
        """LISTEN what subscribers want and UNLISTEN what they no longer want."""
        async with self._lock:
            while (connection := self.connection) is not None:
                wanted = set(self._subscribers)
                add, drop = wanted - self._listened, self._listened - wanted
                if not add and not drop:
                    return
                try:
                    # One statement per channel: works with every OPTIONS
                    # (a joined "LISTEN a; UNLISTEN b" cannot be prepared).
                    await connection.listen(sorted(add))
                    await connection.listen(sorted(drop), "UNLISTEN")
                except ConnectionLost:
                    return  # the reader reconnects, and listens to what is wanted then
                if connection is self.connection:
                    self._listened = (self._listened | add) - drop

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
            # Cancelled (the loop is shutting down) or given up.
            if self.connection is not None:
                await self.connection.close()
                self.connection = None

    async def _serve(self) -> None:
        connection = self.connection
        assert connection is not None
        keepalive = conf.keepalive_interval()
        subscribers = self._subscribers
        while True:
            events = connection.drain()
            if events:
                for event in events:
                    for subscription in subscribers.get(event.channel, ()):
                        subscription.deliver(event)
            elif not await connection.wait(keepalive):
                # Idle: a query proves the connection alive, or fails now
                # instead of at the next TCP timeout.
                await connection.execute("SELECT 1")

    async def _reconnect(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        self.connection = None
        self._listened = set()
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
        await self._reconcile()
        logger.warning("Hub connected to %r again; resyncing subscribers.", self.using)
        for subscription in self.subscriptions():
            subscription.deliver(resync_event("reconnected"))

    def _give_up(self, error: ConnectionLost) -> None:
        logger.error("Hub gives up on %r after repeated failures: %s", self.using, error)
        for subscription in self.subscriptions():
            subscription.fail(error)
        self._subscribers.clear()
        self._reader = None  # the next subscriber starts afresh

    async def close(self) -> None:
        """Stop the hub: close its connection; its subscriptions stop receiving."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await reader
        if self.connection is not None:
            await self.connection.close()
            self.connection = None
        self._listened = set()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Hub]] = (
    weakref.WeakKeyDictionary()
)


def get_hub(using: str | None = None) -> Hub:
    """The hub of this process and running event loop for ``using``.

    Args:
        using: The ``DATABASES`` alias; default the ``LISTENER_DATABASE``
            setting (a direct connection: LISTEN does not work through
            PgBouncer in transaction pooling mode).
    """
    require_psycopg3("The hub (subscribe(), EventStreamView)")
    alias = using or conf.listener_database()
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(alias)
    if hub is None:
        hub = hubs[alias] = Hub(alias)
    return hub


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
