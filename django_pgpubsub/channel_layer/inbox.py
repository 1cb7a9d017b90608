"""The Channels layer's channels and groups in this process: bounded queues of messages,
filled from the hub's thread and read by ``receive()`` on any event loop, and the memberships.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]
Entry = tuple[float, dict[str, Any]]  # (monotonic deadline, message)


class ChannelQueue:
    """One channel's messages, each dropped ``expiry`` seconds after its arrival.

    Not locked itself: :class:`Inbox` holds its lock around every call.
    """

    __slots__ = ("capacity", "messages", "source", "waiters")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.messages: deque[Entry] = deque()
        self.waiters: deque[Waiter] = deque()
        # What feeds it (the layer's tap): receive() skips asking while it listens.
        self.source: Any = None

    def full(self, now: float) -> bool:
        """Whether the channel holds ``capacity`` unexpired messages at ``now``."""
        if len(self.messages) < self.capacity:
            return False
        self._expire(now)
        return len(self.messages) >= self.capacity

    def put(self, entry: Entry, now: float) -> Waiter | None:
        """Queue ``entry``; return the waiter to wake, if any.

        Raises:
            OverflowError: The channel is full.
        """
        if self.full(now):
            raise OverflowError
        self.messages.append(entry)
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter[1].done():
                return waiter
        return None

    def take(self) -> dict[str, Any] | None:
        """The oldest unexpired message, or None.

        A copy of its top level: a group's members share one decoded message,
        and a consumer that changes its own must not change the others'.
        """
        messages = self.messages
        if messages and messages[0][0] < time.monotonic():
            self._expire(time.monotonic())
        return dict(messages.popleft()[1]) if messages else None

    def _expire(self, now: float) -> None:
        messages = self.messages
        while messages and messages[0][0] < now:
            messages.popleft()


class Inbox:
    """This process's channels (by name) and groups (name -> member channels).

    Thread-safe: ``receive()`` runs on the consumers' loops, deliveries on the
    hub's thread.
    """

    def __init__(self, capacity_of: Callable[[str], int], expiry: float) -> None:
        self.capacity_of, self.expiry = capacity_of, expiry
        self.lock = threading.Lock()
        self.channels: dict[str, ChannelQueue] = {}
        self.groups: dict[str, set[str]] = {}

    def queue(self, channel: str) -> ChannelQueue:
        """The queue of ``channel``, created if need be."""
        queue = self.channels.get(channel)
        if queue is not None:
            return queue
        with self.lock:
            queue = self.channels.get(channel)
            if queue is None:
                queue = self.channels[channel] = ChannelQueue(self.capacity_of(channel))
            return queue

    def full(self, channel: str) -> bool:
        """Whether ``channel`` is a channel of this process that holds ``capacity`` messages."""
        with self.lock:
            queue = self.channels.get(channel)
            return queue is not None and queue.full(time.monotonic())

    def add(self, group: str, channel: str) -> None:
        """Make ``channel`` a member of ``group``."""
        with self.lock:
            self.groups.setdefault(group, set()).add(channel)

    def discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``, if it is a member."""
        with self.lock:
            members = self.groups.get(group)
            if members is not None:
                members.discard(channel)
                if not members:
                    del self.groups[group]

    async def take(
        self,
        channel: str,
        claim: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> dict[str, Any]:
        """The next message of ``channel``: one queued here, or one that
        ``claim`` (a normal channel's) takes from elsewhere; waiting on the
        caller's loop until :meth:`wake_all` or a delivery says there may be one."""
        loop = asyncio.get_running_loop()
        lock, channels = self.lock, self.channels
        while True:
            with lock:
                queue = channels.get(channel)
                if queue is None:  # flushed meanwhile
                    queue = channels[channel] = ChannelQueue(self.capacity_of(channel))
                message = queue.take()
                if message is not None:
                    return message
                # Registered before the claim: a wake-up that comes during it is kept.
                future: asyncio.Future[None] = loop.create_future()
                waiter = (loop, future)
                queue.waiters.append(waiter)
            message = None if claim is None else await claim()
            if message is not None:
                self._withdraw(channel, waiter)
                return message
            await future

    def _withdraw(self, channel: str, waiter: Waiter) -> None:
        """``waiter`` got its message elsewhere: forget it, or pass its wake-up on."""
        woken: list[Waiter] = []
        with self.lock:
            queue = self.channels.get(channel)
            if queue is None:
                return
            try:
                queue.waiters.remove(waiter)
            except ValueError:  # woken meanwhile: maybe for a message queued here
                if queue.messages:
                    while queue.waiters and not woken:
                        candidate = queue.waiters.popleft()
                        if not candidate[1].done():
                            woken.append(candidate)
        wake(woken)

    def wake_all(self, channel: str) -> None:
        """Wake every receiver waiting on ``channel`` (from any thread)."""
        with self.lock:
            queue = self.channels.get(channel)
            if queue is None:
                return
            woken = list(queue.waiters)
            queue.waiters.clear()
        wake(woken)

    def abandon(self, channel: str) -> list[str] | None:
        """A ``receive()`` on ``channel`` was cancelled: forget the channel (its
        queue and group memberships) unless another ``receive()`` waits on it.

        Returns:
            The groups left without members, or None if the channel is kept.
        """
        with self.lock:
            queue = self.channels.get(channel)
            if queue is None:
                return []
            live = [waiter for waiter in queue.waiters if not waiter[1].done()]
            if live:
                # The cancelled receive may have been woken for a message: pass it on.
                queue.waiters = deque(live)
                woken = [queue.waiters.popleft()] if queue.messages else []
            else:
                del self.channels[channel]
                emptied = []
                for group, members in list(self.groups.items()):
                    if channel in members:
                        members.discard(channel)
                        if not members:
                            del self.groups[group]
                            emptied.append(group)
                return emptied
        wake(woken)
        return None

    def deliver(self, names: Iterable[str], message: dict[str, Any]) -> list[str]:
        """Queue ``message`` for each of ``names`` that is a channel of this
        process and wake their receivers.

        Returns:
            The channels that were full (the message is dropped for them).
        """
        with self.lock:
            woken, full = self._put(names, message)
        wake(woken)
        return full

    def deliver_to_group(self, group: str, message: dict[str, Any]) -> list[str]:
        """:meth:`deliver` to the members of ``group``."""
        with self.lock:
            woken, full = self._put(self.groups.get(group, ()), message)
        wake(woken)
        return full

    def _put(self, names: Iterable[str], message: dict[str, Any]) -> tuple[list[Waiter], list[str]]:
        """Queue one entry for every channel of ``names`` (under the lock)."""
        now = time.monotonic()
        entry = (now + self.expiry, message)
        woken: list[Waiter] = []
        full: list[str] = []
        channels = self.channels
        for name in names:
            queue = channels.get(name)
            if queue is None:
                continue
            try:
                waiter = queue.put(entry, now)
            except OverflowError:
                full.append(name)
                continue
            if waiter is not None:
                woken.append(waiter)
        return woken, full

    def flush(self) -> None:
        """Forget every message and group; a channel that a ``receive()``
        waits on keeps its (emptied) queue."""
        with self.lock:
            for name, queue in list(self.channels.items()):
                queue.messages.clear()
                if not any(not future.done() for _, future in queue.waiters):
                    del self.channels[name]
            self.groups.clear()


def wake(waiters: Iterable[Waiter]) -> None:
    """Wake ``waiters`` from any thread: one call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, future in waiters:
        futures = by_loop.get(loop)
        if futures is None:
            by_loop[loop] = [future]
        else:
            futures.append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: its receivers are gone
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
