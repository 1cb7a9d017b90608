"""The Channels layer's channels in this process: bounded queues of messages,
read by ``receive()`` on any event loop and filled from the hub's thread."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class ChannelQueue:
    """One channel's messages, each dropped ``expiry`` seconds after its arrival.

    Not locked itself: the layer holds its lock around every call.
    """

    def __init__(self, capacity: int, expiry: float) -> None:
        self.capacity = capacity
        self.expiry = expiry
        self.messages: deque[tuple[float, dict[str, Any]]] = deque()
        self.waiters: deque[Waiter] = deque()

    def full(self) -> bool:
        """Whether the channel holds ``capacity`` unexpired messages."""
        self._expire()
        return len(self.messages) >= self.capacity

    def put(self, message: dict[str, Any]) -> Waiter | None:
        """Queue ``message``; return the waiter to wake, if any.

        Raises:
            OverflowError: The channel is full.
        """
        if self.full():
            raise OverflowError
        self.messages.append((time.monotonic() + self.expiry, message))
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter[1].done():
                return waiter
        return None

    def take(self) -> dict[str, Any] | None:
        """The oldest unexpired message, or None."""
        self._expire()
        return self.messages.popleft()[1] if self.messages else None

    def _expire(self) -> None:
        messages, now = self.messages, time.monotonic()
        while messages and messages[0][0] < now:
            messages.popleft()


def wake(waiters: Iterable[Waiter]) -> None:
    """Wake ``waiters`` from any thread: one call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: its receivers are gone
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
