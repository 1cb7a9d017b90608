"""The low-level API of the ``pgpubsub`` package, on Django's settings."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, TypeVar, overload

from django_pgpubsub.db.connection import open_connection
from django_pgpubsub.db.drivers import DriverConnection
from django_pgpubsub.db.sql import NOTIFY_SQL
from django_pgpubsub.db.waits import wait_readable
from django_pgpubsub.vocabulary.channel_names import validate_channel
from django_pgpubsub.vocabulary.events import Event
from django_pgpubsub.vocabulary.payload import encode_payload


class Listening(Protocol):
    """What :class:`PubSubBase` needs of a driver connection, sync or async."""

    raw: Any
    pid: int

    def drain(self) -> list[Event]: ...


ConnectionT = TypeVar("ConnectionT", bound=Listening)


class PubSubBase(Generic[ConnectionT]):
    """What :class:`PubSub` and its async twin share: the connection, the
    channels listened to, and the events read but not handed out yet."""

    def __init__(self, connection: ConnectionT) -> None:
        self._connection = connection
        self._queue: deque[Event] = deque()
        self._channels: set[str] = set()

    @property
    def conn(self) -> Any:
        """The driver connection (psycopg2's, or psycopg 3's sync or async one)."""
        return self._connection.raw

    @property
    def pid(self) -> int:
        """The process id of this connection's backend."""
        return self._connection.pid

    @property
    def channels(self) -> frozenset[str]:
        """The channels listened to."""
        return frozenset(self._channels)

    def _drop_unlistened(self) -> None:
        """After UNLISTEN: keep the events read so far of the channels still listened to."""
        self._queue.extend(self._connection.drain())
        self._queue = deque(event for event in self._queue if event.channel in self._channels)


class PubSub(PubSubBase[DriverConnection]):
    """A dedicated connection that listens and notifies. Not thread-safe.

    Made by :func:`connect`. Notifications it sends are committed at once
    (the connection is in autocommit).
    """

    def fileno(self) -> int:
        """The socket, for ``select()`` and friends."""
        return self._connection.fileno()

    def listen(self, *channels: str) -> None:
        """Start listening on ``channels``. All are checked before any is sent."""
        names = [validate_channel(channel) for channel in channels]
        for name in names:
            self._connection.listen([name])
            self._channels.add(name)

    def unlisten(self, *channels: str) -> None:
        """Stop listening on ``channels``; with none, on every channel.

        Events of those channels already received but not yet read are dropped.
        """
        names = [validate_channel(channel) for channel in channels]
        if not names:
            self._connection.execute("UNLISTEN *")
            self._channels.clear()
        for name in names:
            self._connection.execute(f"UNLISTEN {self._connection.quote_ident(name)}")
            self._channels.discard(name)
        self._drop_unlistened()

    def notify(self, channel: str, payload: Any = "") -> None:
        """Send a notification on this connection, committed at once.

        Args:
            channel: The channel name.
            payload: A ``str`` is sent as is; anything else as compact JSON.
        """
        args = (validate_channel(channel), encode_payload(payload))
        self._connection.execute(NOTIFY_SQL, args)

    def get_event(self, select_timeout: float = 0) -> Event | None:
        """Return the next event, waiting for one up to ``select_timeout`` seconds.

        Args:
            select_timeout: Seconds to wait when no event has arrived yet;
                0 (the default) never blocks.

        Returns:
            The event, or ``None`` when none came in time.

        Raises:
            ConnectionLost: The connection broke (once the events received
                before the break are all read).
        """
        event = self._next()
        if event is not None or select_timeout <= 0:
            return event
        deadline = time.monotonic() + select_timeout
        while True:
            remaining = deadline - time.monotonic()
            # Readable may be a message that is not a notification: wait again.
            if remaining <= 0 or not wait_readable(self, remaining):
                return self._next()
            event = self._next()
            if event is not None:
                return event

    def get_events(self, select_timeout: float = 0) -> list[Event] | None:
        """Return every event waiting, after waiting up to ``select_timeout``
        seconds for the first.

        Args:
            select_timeout: As for :meth:`get_event`.

        Returns:
            The events, in the order received; ``None`` when there are none.

        Raises:
            ConnectionLost: As for :meth:`get_event`.
        """
        first = self.get_event(select_timeout)
        if first is None:
            return None
        events = [first, *self._queue, *self._connection.drain()]
        self._queue.clear()
        return events

    def _next(self) -> Event | None:
        """The next event received, read from the socket if need be; never blocks."""
        queue = self._queue
        if not queue:
            queue.extend(self._connection.drain())
            if not queue:
                return None
        return queue.popleft()

    @overload
    def events(
        self, select_timeout: float = ..., yield_timeouts: Literal[False] = ...
    ) -> Iterator[Event]: ...

    @overload
    def events(
        self, select_timeout: float = ..., *, yield_timeouts: Literal[True]
    ) -> Iterator[Event | None]: ...

    def events(
        self, select_timeout: float = 5.0, yield_timeouts: bool = False
    ) -> Iterator[Event | None]:
        """Yield events as they arrive, forever.

        Args:
            select_timeout: Seconds to wait on the socket per round.
            yield_timeouts: Yield ``None`` each time a round brings nothing.
        """
        while True:
            event = self.get_event()
            if event is not None:
                yield event
                continue
            if not wait_readable(self, select_timeout) and yield_timeouts:
                yield None

    def close(self) -> None:
        """Close the connection. Its channels are unlistened by the server."""
        self._connection.close()
        self._channels.clear()

    @property
    def closed(self) -> bool:
        return self._connection.closed

    def __enter__(self) -> PubSub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pid={self.pid}"
        return f"<PubSub {self._connection.alias!r} {state} channels={sorted(self._channels)}>"


def connect(using: str | None = None, **overrides: Any) -> PubSub:
    """Open a :class:`PubSub` on a new dedicated connection.

    Args:
        using: The ``DATABASES`` alias; default the ``DATABASE`` setting.
        **overrides: Connection keywords, as psycopg2's ``connect()`` takes
            them (``pgpubsub.connect(user="postgres", database="test")``):
            ``database`` (or ``dbname``), ``user``, ``password``, ``host``
            and ``port`` override the alias's NAME, USER, PASSWORD, HOST and
            PORT; other libpq parameters override its OPTIONS, e.g.
            ``application_name="worker"``.

    Returns:
        The PubSub; close it, or use it as a context manager.

    Raises:
        ImproperlyConfigured: Unknown alias, or not PostgreSQL.
        TypeError: Both ``database`` and ``dbname``.
        ConnectionLost: PostgreSQL could not be reached.
    """
    return PubSub(open_connection(using, options=overrides))
