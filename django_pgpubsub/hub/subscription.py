"""What a subscriber of the hub holds: a bounded queue of events, read as an
async iterator (:func:`django_pgpubsub.subscribe` gives one)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import overload

from django_pgpubsub.db.waits import wait_event
from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.vocabulary.events import Event

RESYNC_CHANNEL = "pgpubsub.resync"


def resync_event(reason: str) -> Event:
    """The event that tells a subscriber it may have missed events."""
    return Event(RESYNC_CHANNEL, f'{{"reason":"{reason}"}}', 0)


class Subscription:
    """The events of some channels, as one subscriber receives them from the hub.

    Iterate it (``async for event in subscription``). Besides the events of
    its channels it yields ``pgpubsub.resync`` events (:data:`RESYNC_CHANNEL`,
    payload ``{"reason": "reconnected"}`` or ``{"reason": "overflow"}``) where
    events may have been missed.
    """

    def __init__(
        self,
        channels: frozenset[str],
        queue_size: int,
        on_close: Callable[[Subscription], None],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.channels = channels
        # The loop its reader awaits on: the hub calls deliver() and fail()
        # there. None: on the hub's own thread (receivers that route further).
        self.loop = loop
        self._on_close = on_close
        self._queue: deque[Event] = deque()
        self._size = queue_size
        self._wake = asyncio.Event()
        self._error: ConnectionLost | None = None
        self.closed = False

    def deliver(self, event: Event) -> None:
        """Queue ``event``; a full queue is replaced by one resync event before it.

        Called on :attr:`loop` (the hub posts it there).
        """
        queue = self._queue
        if len(queue) >= self._size:
            queue.clear()
            queue.append(resync_event("overflow"))
        queue.append(event)
        self._wake.set()

    def fail(self, error: ConnectionLost) -> None:
        """End the iteration with ``error`` once the queue is read (on :attr:`loop`)."""
        self._error = error
        self._wake.set()

    @overload
    def events(self, timeout: None = None) -> AsyncIterator[Event]: ...

    @overload
    def events(self, timeout: float) -> AsyncIterator[Event | None]: ...

    async def events(self, timeout: float | None = None) -> AsyncIterator[Event | None]:
        """Yield events as they come; with ``timeout``, ``None`` after each idle spell.

        Raises:
            ConnectionLost: The hub gave up reconnecting (``RECONNECT_MAX_ATTEMPTS``).
        """
        queue, wake = self._queue, self._wake
        while True:
            if queue:
                yield queue.popleft()
                continue
            if self._error is not None:
                raise self._error
            wake.clear()
            if not await wait_event(wake, timeout):
                yield None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    def close(self) -> None:
        """Leave the hub (idempotent, never blocks; safe while being cancelled,
        and from any thread, e.g. a ``weakref.finalize`` run by the cyclic GC)."""
        if not self.closed:
            self.closed = True
            self._on_close(self)
