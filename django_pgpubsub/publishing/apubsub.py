"""The async twin of :class:`~django_pgpubsub.PubSub` (psycopg 3 only)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from types import TracebackType
from typing import Any, overload

from django_pgpubsub.db.aconnection import AsyncDriverConnection, open_async_connection
from django_pgpubsub.db.sql import NOTIFY_SQL
from django_pgpubsub.publishing.pubsub import PubSubBase
from django_pgpubsub.vocabulary.channel_names import validate_channel
from django_pgpubsub.vocabulary.events import Event
from django_pgpubsub.vocabulary.payload import encode_payload


class AsyncPubSub(PubSubBase[AsyncDriverConnection]):
    """A dedicated async connection that listens and notifies.

    Made by :func:`aconnect`; use it from the event loop that made it, one
    task at a time. Notifications it sends are committed at once.
    """

    @property
    def closed(self) -> bool:
        return self._connection.closed

    async def listen(self, *channels: str) -> None:
        """Start listening on ``channels``. All are checked before any is sent."""
        names = [validate_channel(channel) for channel in channels]
        for name in names:
            await self._connection.listen([name])
            self._channels.add(name)

    async def unlisten(self, *channels: str) -> None:
        """Stop listening on ``channels``; with none, on every channel.

        Events of those channels already received but not yet read are dropped.
        """
        names = [validate_channel(channel) for channel in channels]
        if not names:
            await self._connection.execute("UNLISTEN *")
            self._channels.clear()
        for name in names:
            await self._connection.listen([name], "UNLISTEN")
            self._channels.discard(name)
        self._drop_unlistened()

    async def notify(self, channel: str, payload: Any = "") -> None:
        """Send a notification on this connection, committed at once.

        Args:
            channel: The channel name.
            payload: A ``str`` is sent as is; anything else as compact JSON.
        """
        args = (validate_channel(channel), encode_payload(payload))
        await self._connection.execute(NOTIFY_SQL, args)

    @overload
    def events(self, timeout: None = None) -> AsyncIterator[Event]: ...

    @overload
    def events(self, timeout: float) -> AsyncIterator[Event | None]: ...

    async def events(self, timeout: float | None = None) -> AsyncIterator[Event | None]:
        """Yield events as they arrive, forever.

        Args:
            timeout: With a number of seconds, ``None`` is yielded each time
                that long passes without an event.

        Raises:
            ConnectionLost: The connection broke.
        """
        connection = self._connection
        while True:
            queue = self._queue
            while queue:
                yield queue.popleft()
            batch = connection.drain()
            if batch:
                queue.extend(batch)
            elif not await connection.wait(timeout):
                yield None

    async def close(self) -> None:
        """Close the connection. Its channels are unlistened by the server."""
        await self._connection.close()
        self._channels.clear()

    async def __aenter__(self) -> AsyncPubSub:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pid={self.pid}"
        return f"<AsyncPubSub {self._connection.alias!r} {state} channels={sorted(self._channels)}>"


class Connecting:
    """What :func:`aconnect` returns: await it, or use it with ``async with``.

    ``pubsub = await aconnect()`` gives the :class:`AsyncPubSub`;
    ``async with aconnect() as pubsub:`` also closes it at the end of the block.
    """

    def __init__(self, using: str | None, overrides: dict[str, Any]) -> None:
        self._using = using
        self._overrides = overrides
        self._pubsub: AsyncPubSub | None = None

    async def _open(self) -> AsyncPubSub:
        return AsyncPubSub(await open_async_connection(self._using, options=self._overrides))

    def __await__(self) -> Generator[Any, None, AsyncPubSub]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncPubSub:
        self._pubsub = await self._open()
        return self._pubsub

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pubsub is not None:
            await self._pubsub.close()


def aconnect(using: str | None = None, **overrides: Any) -> Connecting:
    """Open an :class:`AsyncPubSub` on a new dedicated async connection.

    Args:
        using: The ``DATABASES`` alias; default the ``DATABASE`` setting.
        **overrides: As for :func:`~django_pgpubsub.connect`: psycopg2's keywords
            (``database``, ``user``...) and libpq parameters.

    Returns:
        An awaitable of the AsyncPubSub, which is also an async context
        manager that closes it: ``async with aconnect() as pubsub:``.

    Raises:
        ImproperlyConfigured: Django uses psycopg2, or ``using`` is unusable.
        ConnectionLost: PostgreSQL could not be reached.
    """
    return Connecting(using, overrides)
