"""The long-running loop behind ``manage.py listen_events``."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import selectors
import socket
import time
from collections.abc import Callable, Iterable

from django.db import close_old_connections, connections

from django_pgpubsub import conf
from django_pgpubsub.db.claim_sql import HOLD_SQL
from django_pgpubsub.db.connection import listening_options, open_connection
from django_pgpubsub.db.drivers import DriverConnection
from django_pgpubsub.db.reconnect import Reconnection
from django_pgpubsub.db.sql import WAKEUP_CHANNEL
from django_pgpubsub.db.waits import wait_readable
from django_pgpubsub.durable.outbox import Outbox
from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.listener.liveness import (
    APPLICATION_NAME,
    PRESENCE_SQL,
    PROBE_SQL,
    Probe,
    presence_key,
)
from django_pgpubsub.listener.plain_events import run_handlers
from django_pgpubsub.listener.schedule import Periodic, Schedule
from django_pgpubsub.vocabulary.channel_names import validate_channels
from django_pgpubsub.vocabulary.events import Event
from django_pgpubsub.vocabulary.handlers import Handler, Registry, registry
from django_pgpubsub.vocabulary.observer import Observer

logger = logging.getLogger("django_pgpubsub.listener")

ConnectHook = Callable[["Listener", bool], None]

__all__ = ["Listener"]


class Listener:
    """Listens on channels and runs their handlers, through connection failures.

    Runs in the thread that calls :meth:`run`; :meth:`stop` may be called from
    any thread or a signal handler. Handlers run on Django's ordinary
    connections, never on the listening one.

    Args:
        channels: Channels to listen on (a list, not a ``str``); default
            every channel of ``registry``.
        using: ``DATABASES`` alias; default the ``LISTENER_DATABASE`` setting.
        registry: Where handlers are registered; default the global one.
        max_events: Stop after dispatching this many events.
        on_connect: Called with ``(listener, reconnected)`` each time the
            channels are listened to on a new connection.
        durable: Also handle durable events of these channels (from the
            outbox of the ``DATABASE`` setting's database): at start, after
            each reconnect, when woken, and every ``DURABLE_POLL_INTERVAL``.
        observer: Told what the listener does (metrics); default: nothing is.
    """

    def __init__(
        self,
        channels: Iterable[str] | None = None,
        *,
        using: str | None = None,
        registry: Registry = registry,
        max_events: int | None = None,
        on_connect: ConnectHook | None = None,
        durable: bool = True,
        observer: Observer | None = None,
    ) -> None:
        self.registry = registry
        self.using = using or conf.listener_database()
        requested = registry.channels() if channels is None else channels
        self.channels = frozenset(validate_channels(requested))
        if max_events is not None and max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}.")
        self.max_events = max_events
        self.on_connect = on_connect
        self.durable = durable
        self.observer = observer or Observer()
        self._outbox = Outbox(conf.database(), self.observer)
        self._table: dict[str, tuple[Handler, ...]] = {}
        self.dispatched = 0
        self.connection: DriverConnection | None = None
        self._stopping = False
        # While run() runs, stop() writes a byte here to wake its select() from
        # any thread or a signal handler. Sockets, unlike raw fds, are safe to
        # write to after they are closed.
        self._wake_read: socket.socket | None = None
        self._wake_write: socket.socket | None = None
        self._schedule = Schedule()
        self._keepalive: Periodic | None = None
        self._probe = Probe(conf.keepalive_interval() / 2)
        self._probe_deadline: Periodic | None = None
        self._durable_sweep: Periodic | None = None
        self._woken = False  # a wake-up for durable events arrived
        self._alive_at = 0.0  # monotonic time of the last notification read

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping

    def channels_without_handlers(self) -> frozenset[str]:
        """Requested channels that have no registered handler."""
        return frozenset(c for c in self.channels if not self.registry.handlers(c))

    def stop(self) -> None:
        """Ask the loop to stop after the running handler returns. Thread-safe."""
        self._stopping = True
        wake = self._wake_write
        if wake is not None:
            with contextlib.suppress(OSError):  # a full buffer is woken already
                wake.send(b"x")

    def run(self) -> int:
        """Listen and dispatch until stopped or ``max_events`` is reached.

        Returns:
            The number of events dispatched.

        Raises:
            ConnectionLost: The connection could not be restored within
                ``RECONNECT_MAX_ATTEMPTS``.
        """
        # One lookup table per run: handlers are registered at import time.
        # async def handlers become plain functions that await them.
        self._table = {channel: self.registry.sync_handlers(channel) for channel in self.channels}
        self._schedule = self._make_schedule()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        try:
            self._connect_with_retries(reconnecting=False)
            while not self._stopping:
                try:
                    self._serve()
                except ConnectionLost as exc:
                    self._handle_received()
                    if not self._stopping:
                        self._connect_with_retries(reconnecting=True, reason=exc)
        finally:
            self._outbox.release()
            self._close()
            self._wake_read.close()
            self._wake_write.close()
        return self.dispatched

    def _make_schedule(self) -> Schedule:
        schedule = Schedule()
        # Idle for this long, the listener notifies itself: the query fails in
        # seconds on a dead connection instead of at the next TCP timeout, and
        # the answer proves that notifications still arrive. Traffic postpones it.
        interval = conf.keepalive_interval()
        self._probe = Probe(interval / 2)
        self._keepalive = schedule.every("keepalive", interval, self._send_probe)
        # Due only while a probe is out (math.inf otherwise): see _send_probe.
        self._probe_deadline = schedule.every("probe deadline", math.inf, self._probe.check)
        if self.durable:
            # Retries that came due, and events whose wake-up was missed, are
            # found on time whatever the plain traffic.
            self._durable_sweep = schedule.every(
                "durable", conf.durable_poll_interval(), self._sweep_durable
            )
            if conf.durable_wakeup() == "poll":
                # Writers send no wake-ups: a cheap probe, often.
                schedule.every("durable probe", conf.durable_probe_interval(), self._probe_durable)
        return schedule

    def _send_probe(self) -> None:
        assert self.connection is not None
        assert self._probe_deadline is not None
        # Set first: the answer usually arrives while the statement runs.
        self._probe_deadline.due = self._probe.sent()
        self.connection.execute(PROBE_SQL, (self._probe.channel,))

    def _serve(self) -> None:
        table = self._table
        connection = self.connection
        schedule = self._schedule
        keepalive = self._keepalive
        assert connection is not None
        assert keepalive is not None
        assert self._wake_read is not None
        # selectors, not select.select(), which fails for descriptors >= 1024.
        with selectors.DefaultSelector() as selector:
            selector.register(connection.fileno(), selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._stopping:
                events = connection.drain()
                now = time.monotonic()
                if events:
                    keepalive.postpone(now)
                    self._alive_at = now
                    self._handle(events, table)
                if not self._stopping:
                    schedule.run_due(now)
                if self.durable and not self._stopping and (self._woken or self._outbox.backlog):
                    # One bounded turn of durable work, then the loop reads its
                    # socket and runs its schedule again: a backlog holds
                    # nothing else back.
                    self._handle_durable()
                    continue
                if not events and not self._stopping:
                    selector.select(schedule.timeout(time.monotonic()))

    def _handle_received(self) -> None:
        """Dispatch what the lost connection received before it broke.

        The keepalive query can be what finds the loss, after the driver read
        notifications that no drain() has returned yet.
        """
        connection = self.connection
        if connection is None:
            return
        with contextlib.suppress(ConnectionLost):
            while not self._stopping and (events := connection.drain()):
                self._handle(events, self._table)

    def _handle(self, events: list[Event], table: dict[str, tuple[Handler, ...]]) -> None:
        if self._probe.waiting:
            events = self._probe.receive(events)
        close_old_connections()
        if self.durable:
            plain = [e for e in events if e.channel != WAKEUP_CHANNEL]
            if len(plain) != len(events):
                # Handled by the loop, after these events, in bounded turns.
                self._woken = self._woken or any(
                    e.payload in table for e in events if e.channel == WAKEUP_CHANNEL
                )
                events = plain
        self._dispatch(events, table)
        close_old_connections()

    def _sweep_durable(self) -> None:
        # Also takes back the claims of dead or hung listeners.
        self._handle_durable(recover=True)

    def _probe_durable(self) -> None:
        if not self._outbox.backlog and self._outbox.due(self._table):
            self._woken = True  # the loop handles them

    def _handle_durable(self, *, recover: bool = False) -> None:
        """One bounded turn of the durable events that are due (outside any batch)."""
        self._woken = False
        remaining = None if self.max_events is None else self.max_events - self.dispatched
        close_old_connections()
        self.dispatched += self._outbox.sweep(
            self._table, lambda: self._stopping, remaining, recover=recover
        )
        close_old_connections()
        retry_at = self._outbox.next_retry()
        if retry_at is not None and self._durable_sweep is not None:
            # A retry due before the next sweep: sweep when it comes due.
            self._durable_sweep.due = min(self._durable_sweep.due, retry_at)
        if self.max_events is not None and self.dispatched >= self.max_events:
            self.stop()

    def _dispatch(self, events: list[Event], table: dict[str, tuple[Handler, ...]]) -> None:
        limit = -1 if self.max_events is None else self.max_events - self.dispatched
        count = run_handlers(events, table, self.observer, self, limit)
        self.dispatched += count
        if count == limit:
            self.stop()

    def _open(self) -> DriverConnection:
        connection = open_connection(
            self.using, default_options=listening_options(APPLICATION_NAME)
        )
        channels = sorted(self.channels)
        if self.durable and channels:
            channels.append(WAKEUP_CHANNEL)
        channels.append(self._probe.start(connection.pid))
        try:
            connection.listen(channels)
            # Shows pubsub_health which channels this listener serves.
            keys = [presence_key(channel) for channel in sorted(self.channels)]
            connection.execute(PRESENCE_SQL, (keys,))
            if self.durable:
                # Proves to other listeners' recovery, in pg_locks, that this
                # listener lives: its claims carry the key (see claim_sql.HOLD_SQL).
                holder_key = int.from_bytes(os.urandom(8), "big", signed=True)
                connection.execute(HOLD_SQL, (holder_key,))
                self._outbox.held_by(holder_key)
        except BaseException:
            connection.close()
            raise
        return connection

    def _connect_with_retries(
        self, *, reconnecting: bool, reason: ConnectionLost | None = None
    ) -> None:
        self._close()
        down_since = time.monotonic()
        # Plain events may have been missed since the last sign of life: a
        # notification read, or a probe answered.
        alive = max(self._alive_at, self._probe.answered_at) if reconnecting else down_since
        if reason is not None:
            logger.warning("Lost the connection to %r (%s); reconnecting.", self.using, reason)
        attempts = Reconnection("Listener", self.using, logger)
        while not self._stopping:
            try:
                self.connection = self._open()
            except ConnectionLost as exc:
                self._sleep(attempts.failed(exc))
                continue
            self._alive_at = time.monotonic()
            self.observer.connected(reconnecting)
            if reconnecting or attempts.failures:
                outage = self._alive_at - alive
                logger.warning(
                    "Connected to %r again after %.1f s without a working connection; "
                    "listening on %d channel(s).",
                    self.using,
                    outage,
                    len(self.channels),
                    extra={
                        "outage_seconds": round(outage, 3),
                        "failed_attempts": attempts.failures,
                    },
                )
                # Whatever broke ours (a restart, the network) likely broke the
                # connections handlers use too: start them afresh.
                connections.close_all()
            if self.on_connect is not None:
                self.on_connect(self, reconnecting)
            if self.durable:
                # Listening already: what this sweep misses will wake us.
                self._sweep_durable()
            return

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when :meth:`stop` is called."""
        assert self._wake_read is not None
        wait_readable(self._wake_read, seconds)

    def _close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
            self.observer.disconnected()
