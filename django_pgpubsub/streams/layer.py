"""A Django Channels layer on the hub: one LISTEN connection per process, one
NOTIFY per ``group_send``, delivered at commit inside a transaction.

Membership is process-local, as in channels_redis's ``RedisPubSubChannelLayer``:
a group is one PostgreSQL channel, LISTENed by every process that holds a
member, and each process hands a group's messages to its own members. A
specific channel (``new_channel()``) names its process before the ``!``: a
``send()`` from anywhere is a NOTIFY on that process's channel.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import deque
from typing import Any

from asgiref.sync import AsyncToSync, sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from django_pgpubsub import conf
from django_pgpubsub.events import Event
from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.streams import messages, runtime
from django_pgpubsub.streams.hub import Hub, get_hub
from django_pgpubsub.streams.inbox import ChannelQueue, Waiter, wake
from django_pgpubsub.streams.subscription import RESYNC_CHANNEL, Subscription

logger = logging.getLogger("django_pgpubsub.layers")

RESYNC_TYPE = "pgpubsub.resync"


class _Tap(Subscription):
    """The layer's subscription to one PostgreSQL channel; runs on the hub's thread."""

    def __init__(self, layer: PubSubChannelLayer, hub: Hub, pg_name: str, kind: str) -> None:
        super().__init__(frozenset([pg_name]), 1, hub.unsubscribe, None)
        self.layer, self.kind = layer, kind
        self.attached: asyncio.Task[None] | None = None

    def deliver(self, event: Event) -> None:
        self.layer._arrived(self, event)

    def fail(self, error: ConnectionLost) -> None:
        # The hub gave up and dropped its subscribers: listen afresh next time.
        self.layer._lost(self)


class PubSubChannelLayer(BaseChannelLayer):  # type: ignore[misc]  # channels is untyped
    """The ASGI channel layer spec on PostgreSQL LISTEN/NOTIFY (see the docs'
    "Channels layer" page for ``CONFIG``)."""

    extensions = ["groups", "flush"]  # noqa: RUF012 - the spec's name

    def __init__(
        self,
        *,
        using: str | None = None,
        capacity: int = 100,
        expiry: float = 60,
        channel_capacity: dict[str, int] | None = None,
        prefix: str = "asgi",
        immediate: bool = False,
        resync: bool = False,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        if not prefix or len(prefix) > 16 or not self.group_name_regex.match(prefix):
            raise ImproperlyConfigured(
                f"The channel layer's prefix {prefix!r} must be 1 to 16 characters among "
                "ASCII letters, digits, '-', '_' and '.'."
            )
        self.using, self.prefix = using, prefix
        self.immediate, self.resync = immediate, resync
        self.process = uuid.uuid4().hex[:12]  # this process's part of new_channel() names
        self._lock = threading.Lock()
        self._channels: dict[str, ChannelQueue] = {}
        self._groups: dict[str, set[str]] = {}
        self._taps: dict[str, _Tap] = {}
        self._incoming: deque[tuple[_Tap, str]] = deque()
        self._pump: asyncio.Task[None] | None = None

    @property
    def hub(self) -> Hub:
        """The hub of this process for the layer's alias."""
        return get_hub(self.using or conf.listener_database())

    # -- the spec ---------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new channel name of this process, reachable from every process."""
        name = f"{prefix}.{self.process}!{uuid.uuid4().hex}"
        self.require_valid_channel_name(name)
        self._queue(name)
        await self._listen("p", self.non_local_name(name))
        return name

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``channel`` (delivered at commit inside a transaction).

        Raises:
            ChannelFull: ``channel`` lives in this process and holds ``capacity`` messages.
        """
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        with self._lock:
            queue = self._channels.get(channel)
            if queue is not None and queue.full():
                raise ChannelFull(channel)
        if "!" in channel:
            target = messages.pg_channel(self.prefix, "p", self.non_local_name(channel))
        else:
            target = messages.pg_channel(self.prefix, "c", channel)
        await self._publish(target, messages.encode(channel, message), single="!" in channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message of ``channel``. Cancelled, it forgets the channel
        (the consumer left), as channels_redis's pub/sub layer does."""
        self.require_valid_channel_name(channel)
        queue = self._queue(channel)
        if "!" not in channel:
            await self._listen("c", channel)
        loop = asyncio.get_running_loop()
        try:
            while True:
                with self._lock:
                    message = queue.take()
                    if message is not None:
                        return message
                    future: asyncio.Future[None] = loop.create_future()
                    queue.waiters.append((loop, future))
                await future
        except asyncio.CancelledError:
            self._forget(channel)
            raise

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``; the group's messages reach it from now on."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        with self._lock:
            self._groups.setdefault(group, set()).add(channel)
        self._queue(channel)
        await self._listen("g", group)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group`` (no error if it was not in it)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        with self._lock:
            members = self._groups.get(group)
            if members is not None:
                members.discard(channel)
                if not members:
                    del self._groups[group]
        self._unlisten(messages.pg_channel(self.prefix, "g", group))

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """One NOTIFY: every process hands ``message`` to its members of ``group``.

        A member whose channel is full misses it, as the spec allows.
        """
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        target = messages.pg_channel(self.prefix, "g", group)
        await self._publish(target, messages.encode(group, message), single=False)

    async def flush(self) -> None:
        """Forget every channel, group and message of this process, and every
        stored message (the rows are shared by all processes: for tests)."""
        with self._lock:
            for name, queue in list(self._channels.items()):
                queue.messages.clear()
                if not queue.waiters:  # a receive() still waits on the others
                    del self._channels[name]
            self._groups.clear()
            taps = list(self._taps)
        for pg_name in taps:
            self._unlisten(pg_name)
        await self.hub.execute(messages.FLUSH)

    async def close(self) -> None:
        """Stop listening for this layer (its state is kept)."""
        for pg_name in list(self._taps):
            self._unlisten(pg_name)

    # -- sending ------------------------------------------------------------

    async def _publish(self, target: str, text: str, *, single: bool) -> None:
        params: tuple[Any, ...]
        if messages.fits(text):
            sql, params = messages.NOTIFY, (target, text)
        else:
            sql, params = messages.STORE, (text, float(self.expiry), target)
        # Inside async_to_sync a sync caller waits, perhaps in a transaction:
        # send on its thread's Django connection, so that the commit decides.
        if not self.immediate and getattr(AsyncToSync.executors, "current", None) is not None:
            await sync_to_async(self._publish_in_caller, thread_sensitive=True)(sql, params)
        else:
            await self.hub.execute(sql, params)

    def _publish_in_caller(self, sql: str, params: tuple[Any, ...]) -> None:
        with connections[self.using or conf.listener_database()].cursor() as cursor:
            cursor.execute(sql, params)

    # -- listening: everything below runs on the hub's loop or under the lock --

    def _queue(self, channel: str) -> ChannelQueue:
        with self._lock:
            queue = self._channels.get(channel)
            if queue is None:
                capacity = self.get_capacity(channel)
                queue = self._channels[channel] = ChannelQueue(capacity, self.expiry)
            return queue

    def _forget(self, channel: str) -> None:
        with self._lock:
            self._channels.pop(channel, None)
            emptied = []
            for group, members in list(self._groups.items()):
                if channel in members:
                    members.discard(channel)
                    if not members:
                        del self._groups[group]
                        emptied.append(messages.pg_channel(self.prefix, "g", group))
        if "!" in channel:
            emptied.append(messages.pg_channel(self.prefix, "p", self.non_local_name(channel)))
        else:
            emptied.append(messages.pg_channel(self.prefix, "c", channel))
        for pg_name in emptied:
            self._unlisten(pg_name)

    async def _listen(self, kind: str, name: str) -> None:
        await runtime.call(self._tap(messages.pg_channel(self.prefix, kind, name), kind))

    async def _tap(self, pg_name: str, kind: str) -> None:
        tap = self._taps.get(pg_name)
        if tap is None:
            hub = self.hub
            tap = self._taps[pg_name] = _Tap(self, hub, pg_name, kind)
            tap.attached = asyncio.get_running_loop().create_task(hub.attach(tap))
        assert tap.attached is not None
        try:
            await asyncio.shield(tap.attached)
        except ConnectionLost:
            self._lost(tap)
            raise

    def _lost(self, tap: _Tap) -> None:
        (pg_name,) = tap.channels
        if self._taps.get(pg_name) is tap:
            del self._taps[pg_name]

    def _unlisten(self, pg_name: str) -> None:
        """UNLISTEN ``pg_name`` unless something of this process still wants it."""
        runtime.hub_loop().call_soon_threadsafe(self._untap, pg_name)

    def _untap(self, pg_name: str) -> None:
        tap = self._taps.get(pg_name)
        if tap is None or self._wanted(tap):
            return
        del self._taps[pg_name]
        tap.close()

    def _wanted(self, tap: _Tap) -> bool:
        (pg_name,) = tap.channels
        with self._lock:
            if tap.kind == "g":
                names: Any = self._groups
            elif tap.kind == "p":
                names = (self.non_local_name(c) for c in self._channels if "!" in c)
            else:
                names = (c for c in self._channels if "!" not in c)
            return any(messages.pg_channel(self.prefix, tap.kind, n) == pg_name for n in names)

    def _arrived(self, tap: _Tap, event: Event) -> None:
        """An event of a tap, on the hub's thread: routed in arrival order, once
        the stored messages before it are read."""
        if event.channel == RESYNC_CHANNEL:
            if self.resync and tap.kind != "g":  # once per channel, not per group
                self._resync(tap)
            return
        if self._incoming or event.payload.startswith(messages.STORED):
            self._incoming.append((tap, event.payload))
            if self._pump is None or self._pump.done():
                self._pump = asyncio.get_running_loop().create_task(self._read_stored())
        else:
            self._route(tap, event.payload)

    async def _read_stored(self) -> None:
        while self._incoming:
            tap, payload = self._incoming[0]
            if payload.startswith(messages.STORED):
                sql = messages.TAKE if tap.kind == "p" else messages.READ
                try:
                    rows = await self.hub.execute(sql, (int(payload[1:]),))
                except Exception:
                    logger.exception("The channel layer could not read a stored message.")
                    rows = []
                payload = rows[0][0] if rows else ""
            self._incoming.popleft()
            if payload:
                self._route(tap, payload)

    def _route(self, tap: _Tap, payload: str) -> None:
        destination, message = messages.decode(payload)
        with self._lock:
            names = list(self._groups.get(destination, ())) if tap.kind == "g" else [destination]
            woken: list[Waiter] = []
            for name in names:
                queue = self._channels.get(name)
                if queue is None:
                    continue
                try:
                    waiter = queue.put(message)
                except OverflowError:
                    logger.warning("Channel %r is full: a message to it was dropped.", name)
                    continue
                if waiter is not None:
                    woken.append(waiter)
        wake(woken)

    def _resync(self, tap: _Tap) -> None:
        with self._lock:
            names = [n for n in self._channels if self._wanted_by(tap, n)]
        for name in names:
            self._route(tap, messages.encode(name, {"type": RESYNC_TYPE, "reason": "reconnected"}))

    def _wanted_by(self, tap: _Tap, channel: str) -> bool:
        kind = "p" if "!" in channel else "c"
        name = self.non_local_name(channel) if kind == "p" else channel
        return kind == tap.kind and messages.pg_channel(self.prefix, kind, name) in tap.channels
