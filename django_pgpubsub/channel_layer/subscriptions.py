"""The Channels layer's side of the hub: the PostgreSQL channels it LISTENs to (a hub
subscription, or tap, each) and the routing of what they receive, on the hub's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable

from django_pgpubsub.channel_layer import maintenance, messages
from django_pgpubsub.channel_layer.drops import DROPS
from django_pgpubsub.channel_layer.inbox import Inbox
from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.hub import runtime
from django_pgpubsub.hub.hub import Hub
from django_pgpubsub.hub.subscription import RESYNC_CHANNEL, Subscription
from django_pgpubsub.vocabulary.events import Event

logger = logging.getLogger("django_pgpubsub.layers")

RESYNC_TYPE = "pgpubsub.resync"


def kind_of(channel: str) -> tuple[str, str]:
    """The tap kind and name of a layer channel: ``("p", "<up to !>")`` for a
    specific channel, ``("c", channel)`` for a normal one."""
    bang = channel.find("!")
    if bang < 0:
        return "c", channel
    return "p", channel[: bang + 1]


class _Tap(Subscription):
    """The layer's subscription to one PostgreSQL channel; runs on the hub's thread."""

    def __init__(self, taps: Taps, hub: Hub, kind: str, name: str) -> None:
        pg_name = taps.pg_name(kind, name)
        super().__init__(frozenset([pg_name]), 1, hub.unsubscribe, None)
        self.taps, self.kind, self.name, self.pg_name = taps, kind, name, pg_name
        self.attached: asyncio.Task[None] | None = None
        self.listening = False  # set on the hub's thread, read from any

    def deliver(self, event: Event) -> None:
        self.taps.arrived(self, event)

    def fail(self, error: ConnectionLost) -> None:
        # The hub gave up and dropped its subscribers: listen afresh next time.
        self.taps.lost(self)


class Taps:
    """The PostgreSQL channels one layer LISTENs to, kept while the
    :class:`Inbox` has channels or groups that need them."""

    def __init__(
        self, prefix: str, inbox: Inbox, hub: Callable[[], Hub], *, origin: str, resync: bool
    ) -> None:
        self.prefix, self.inbox, self.hub, self.resync = prefix, inbox, hub, resync
        # The layer's group_send NOTIFYs: its members had them from the layer itself.
        self._own = messages.own_tags(origin)
        self._taps: dict[str, _Tap] = {}
        self._incoming: deque[tuple[_Tap, str]] = deque()
        self._pump: asyncio.Task[None] | None = None

    def pg_name(self, kind: str, name: str) -> str:
        """The PostgreSQL channel of a group, process or normal channel."""
        return messages.pg_channel(self.prefix, kind, name)

    @property
    def listened(self) -> frozenset[str]:
        """The PostgreSQL channels of the current taps."""
        return frozenset(self._taps)

    async def listen(self, kind: str, name: str) -> _Tap:
        """LISTEN for ``name`` of ``kind``; at once when it is listened to already.

        Returns:
            The tap, whose ``listening`` says (from any thread) that it still is.

        Raises:
            ConnectionLost: The hub could not connect.
        """
        pg_name = self.pg_name(kind, name)
        tap = self._taps.get(pg_name)  # a read from another thread: the fast path
        if tap is None or not tap.listening:
            tap = await runtime.call(self._tap(pg_name, kind, name))
        return tap

    async def _tap(self, pg_name: str, kind: str, name: str) -> _Tap:
        tap = self._taps.get(pg_name)
        if tap is None:
            hub = self.hub()
            tap = self._taps[pg_name] = _Tap(self, hub, kind, name)
            tap.attached = asyncio.get_running_loop().create_task(hub.attach(tap))
            await maintenance.start(hub, self.inbox.expiry)
        assert tap.attached is not None
        try:
            await asyncio.shield(tap.attached)
        except ConnectionLost:
            self.lost(tap)
            raise
        tap.listening = self._taps.get(pg_name) is tap
        return tap

    def lost(self, tap: _Tap) -> None:
        """Forget ``tap`` (its subscription ended)."""
        tap.listening = False
        if self._taps.get(tap.pg_name) is tap:
            del self._taps[tap.pg_name]

    def unlisten(self, pg_names: Iterable[str]) -> None:
        """UNLISTEN each of ``pg_names`` unless the inbox still needs it (from any thread)."""
        names = list(pg_names)
        if names:
            runtime.hub_loop().call_soon_threadsafe(self._untap, names)

    def unlisten_all(self) -> None:
        """:meth:`unlisten` every tap."""
        self.unlisten(list(self._taps))

    def _untap(self, pg_names: list[str]) -> None:
        for pg_name in pg_names:
            tap = self._taps.get(pg_name)
            if tap is not None and not self._wanted(tap):
                self.lost(tap)
                tap.close()

    def _wanted(self, tap: _Tap) -> bool:
        """Whether the inbox has a group or channel that needs ``tap``."""
        inbox, name = self.inbox, tap.name
        with inbox.lock:
            if tap.kind == "g":
                return name in inbox.groups
            if tap.kind == "c":
                return name in inbox.channels
            # Nearly every specific channel has the same prefix: found at once.
            return any(channel.startswith(name) for channel in inbox.channels)

    # -- notifications, on the hub's thread ----------------------------------

    def arrived(self, tap: _Tap, event: Event) -> None:
        """A notification of ``tap``: routed in arrival order, once the stored
        messages before it are read."""
        if tap.kind == "c":
            # A normal channel's messages wait in PostgreSQL: a NOTIFY, or a
            # reconnection that may have missed some, wakes its receivers to claim.
            self.inbox.wake_all(tap.name)
            return
        if event.channel == RESYNC_CHANNEL:
            if self.resync and tap.kind != "g":  # once per channel, not per group
                self._resync(tap)
            return
        payload = event.payload
        if tap.kind == "g" and payload.endswith(self._own):
            return
        if self._incoming or payload.startswith(messages.STORED):
            self._incoming.append((tap, payload))
            if self._pump is None or self._pump.done():
                self._pump = asyncio.get_running_loop().create_task(self._read_stored())
        else:
            self._route(tap, payload)

    async def _read_stored(self) -> None:
        while self._incoming:
            tap, payload = self._incoming[0]
            if payload.startswith(messages.STORED):
                sql = messages.TAKE if tap.kind == "p" else messages.READ
                try:
                    rows = await self.hub().execute(sql, (messages.stored_id(payload),))
                except Exception:
                    logger.exception("The channel layer could not read a stored message.")
                    rows = []
                payload = rows[0][0] if rows else ""
            self._incoming.popleft()
            if payload:
                self._route(tap, payload)

    def _route(self, tap: _Tap, payload: str) -> None:
        """Decode once; hand the message to the group's members, or the channel."""
        destination, message = messages.decode(payload)
        if tap.kind == "g":
            full = self.inbox.deliver_to_group(destination, message)
        else:
            full = self.inbox.deliver([destination], message)
        DROPS.dropped(full)

    def _resync(self, tap: _Tap) -> None:
        with self.inbox.lock:
            names = [n for n in self.inbox.channels if kind_of(n) == (tap.kind, tap.name)]
        for name in names:
            self.inbox.deliver([name], {"type": RESYNC_TYPE, "reason": "reconnected"})
