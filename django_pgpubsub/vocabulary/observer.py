"""What a listener reports as it runs, for metrics: :class:`Observer` (the default, ignores
every call), :class:`EventLog` (a line per event, ``-v 2``), :class:`Observers` (several).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from django_pgpubsub.vocabulary.handlers import Handler, handler_name


class Observer:
    """Receives what the listener does; this base class ignores it.

    Attributes:
        timed: Whether the listener should time each event's handlers and
            call :meth:`handled` (False: it skips that per-event work).
    """

    timed = False

    def handled(self, channel: str, seconds: float) -> None:
        """An event of ``channel`` went through its handlers in ``seconds``."""

    def handler_failed(self, channel: str, handler: Handler) -> None:
        """``handler`` raised on an event of ``channel``."""

    def connected(self, reconnected: bool) -> None:
        """The listener listens on a new connection (``reconnected``: not the first)."""

    def disconnected(self) -> None:
        """The listener lost or closed its connection."""


class Observers(Observer):
    """Several observers as one (metrics and the ``-v 2`` event log together)."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers
        self._timed = tuple(o for o in observers if o.timed)
        self.timed = bool(self._timed)

    def handled(self, channel: str, seconds: float) -> None:
        for observer in self._timed:
            observer.handled(channel, seconds)

    def handler_failed(self, channel: str, handler: Handler) -> None:
        for observer in self.observers:
            observer.handler_failed(channel, handler)

    def connected(self, reconnected: bool) -> None:
        for observer in self.observers:
            observer.connected(reconnected)

    def disconnected(self) -> None:
        for observer in self.observers:
            observer.disconnected()


class EventLog(Observer):
    """One line per handled event: ``listen_events -v 2``.

    ``handled shop.order in 1.2 ms by shop.pubsub.on_order: ok``, or
    ``...: failed in shop.pubsub.on_order (RuntimeError)``. Only a listener
    given one does that per-event work; at the default verbosity it has none.

    Args:
        handlers: The handlers of a channel (``Registry.handlers``).
        write: Where each line goes (``listen_events``' stdout).
    """

    timed = True

    def __init__(
        self, handlers: Callable[[str], Iterable[Handler]], write: Callable[[str], None]
    ) -> None:
        self._handlers = handlers
        self._write = write
        self._failures: list[str] = []

    def handler_failed(self, channel: str, handler: Handler) -> None:
        # Called while the handler's exception is being handled.
        error = sys.exc_info()[0]
        kind = f" ({error.__name__})" if error is not None else ""
        self._failures.append(f"{handler_name(handler)}{kind}")

    def handled(self, channel: str, seconds: float) -> None:
        names = ", ".join(handler_name(h) for h in self._handlers(channel)) or "(no handler)"
        if self._failures:
            outcome = "failed in " + ", ".join(self._failures)
            self._failures = []
        else:
            outcome = "ok"
        self._write(f"handled {channel} in {seconds * 1000:.1f} ms by {names}: {outcome}")
