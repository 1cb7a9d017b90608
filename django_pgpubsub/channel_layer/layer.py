"""The Channels layer (:class:`PubSubChannelLayer`) on the hub: a group or a process is a
PostgreSQL channel, membership is process-local, and what a layer sends itself skips PostgreSQL.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from django.core.exceptions import ImproperlyConfigured

from django_pgpubsub import conf
from django_pgpubsub.channel_layer import messages, queues, sending
from django_pgpubsub.channel_layer.drops import DROPS
from django_pgpubsub.channel_layer.inbox import Inbox
from django_pgpubsub.channel_layer.subscriptions import RESYNC_TYPE, Taps, kind_of
from django_pgpubsub.hub.hub import Hub, get_hub

__all__ = ["RESYNC_TYPE", "PubSubChannelLayer"]


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
        self._mine = f".{self.process}!"  # how the names of its specific channels end before "!"
        self._inbox = Inbox(self.get_capacity, expiry)
        self._taps = Taps(prefix, self._inbox, lambda: self.hub, origin=self.process, resync=resync)

    @property
    def hub(self) -> Hub:
        """The hub of this process for the layer's alias."""
        return get_hub(self.using or conf.listener_database())

    # -- the spec ---------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new channel name of this process, reachable from every process."""
        name = f"{prefix}.{self.process}!{uuid.uuid4().hex}"
        self.require_valid_channel_name(name)
        self._inbox.queue(name)
        await self._taps.listen(*kind_of(name))
        return name

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``channel`` (delivered at commit inside a transaction).

        A normal channel's message waits in PostgreSQL for one receiver; a
        specific channel of this layer gets it straight, without PostgreSQL.

        Raises:
            ChannelFull: ``channel`` is a normal channel with ``capacity``
                unexpired messages, or lives in this process and holds ``capacity``.
        """
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        inbox = self._inbox
        kind, name = kind_of(channel)
        if kind == "c":
            sql = queues.statement(
                channel,
                self._taps.pg_name(kind, name),
                message,
                self.expiry,
                self.get_capacity(channel),
            )
            using = self.using or conf.listener_database()
            if not await sending.query(using, sql, immediate=self.immediate):
                raise ChannelFull(channel)
            return
        if inbox.full(channel):
            raise ChannelFull(channel)
        if kind == "p" and name.endswith(self._mine):
            local = functools.partial(inbox.deliver, (channel,), messages.copied(message))
            alone = functools.partial(self._statement, channel, message)
            if await self._send(None, local, alone):
                raise ChannelFull(channel)
            return
        await self._send(self._statement(channel, message))

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message of ``channel`` (of a normal channel: one no other
        receiver, in any process, takes). Cancelled, it forgets the channel
        (the consumer left) unless another ``receive()`` waits on it, as
        channels_redis's pub/sub layer does.

        Raises:
            ValueError: ``channel`` is a specific channel of another process.
        """
        inbox = self._inbox
        queue = inbox.channels.get(channel)
        if queue is None:  # a known channel's name was checked when it was made
            self._require_local(channel, "receive from it")
            queue = inbox.queue(channel)
        kind, name = kind_of(channel)
        if queue.source is None or not queue.source.listening:
            queue.source = await self._taps.listen(kind, name)
        try:
            if kind == "c":
                pg_name = self._taps.pg_name(kind, name)
                return await inbox.take(
                    channel, functools.partial(queues.claim, self.hub, channel, pg_name)
                )
            return await inbox.take(channel)
        except asyncio.CancelledError:
            emptied = inbox.abandon(channel)
            if emptied is not None:
                pg_names = [self._taps.pg_name("g", group) for group in emptied]
                self._taps.unlisten([*pg_names, self._taps.pg_name(*kind_of(channel))])
            raise

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``; the group's messages reach it from now on.

        Raises:
            ValueError: ``channel`` is a specific channel of another process
                (membership is process-local).
        """
        self.require_valid_group_name(group)
        self._require_local(channel, "add it to a group")
        self._inbox.add(group, channel)
        self._inbox.queue(channel)
        await self._taps.listen("g", group)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group`` (no error if it was not in it)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._inbox.discard(group, channel)
        self._taps.unlisten([self._taps.pg_name("g", group)])

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """One NOTIFY: every process hands ``message`` to its members of ``group``.

        A member whose channel is full misses it, as the spec allows.
        """
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        target = self._taps.pg_name("g", group)
        text = messages.encode(group, message)
        inbox = self._inbox

        def local() -> list[str]:  # this layer's members, who skip the NOTIFY
            if group in inbox.groups:
                DROPS.dropped(inbox.deliver_to_group(group, messages.decode(text)[1]))
            return []

        def alone() -> sending.Statement:  # untagged: this layer's members take it too
            return sending.statement(target, text, self.expiry)

        await self._send(sending.statement(target, text, self.expiry, self.process), local, alone)

    async def flush(self) -> None:
        """Forget every channel, group and message of this process, and every
        stored message (the rows are shared by all processes: for tests)."""
        self._inbox.flush()
        self._taps.unlisten_all()
        await self.hub.execute(messages.FLUSH)

    async def close(self) -> None:
        """UNLISTEN what none of this layer's channels and groups needs any more."""
        self._taps.unlisten_all()

    def _require_local(self, channel: str, what: str) -> None:
        """Check the name of a channel used in this process.

        Raises:
            TypeError: Not a valid channel name.
            ValueError: A specific channel of another process.
        """
        self.require_valid_channel_name(channel)
        kind, name = kind_of(channel)
        if kind == "p" and not name.endswith(self._mine):
            raise ValueError(
                f"{channel!r} is a channel of another process: only the process "
                f"whose new_channel() made it can {what}."
            )

    def _statement(self, channel: str, message: dict[str, Any]) -> sending.Statement:
        """What sends ``message`` to ``channel`` through PostgreSQL."""
        target = self._taps.pg_name(*kind_of(channel))
        return sending.statement(target, messages.encode(channel, message), self.expiry)

    async def _send(
        self,
        sql: sending.Statement | None,
        local: sending.Local | None = None,
        alone: sending.Alone | None = None,
    ) -> list[str]:
        using = self.using or conf.listener_database()
        return await sending.send(using, sql, local, immediate=self.immediate, alone=alone)
