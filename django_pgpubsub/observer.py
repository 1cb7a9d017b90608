"""What a listener reports as it runs, for metrics (``listen_events --metrics-port``).

The listener and the outbox call an :class:`Observer` at a few points. This
base class ignores every call and is the default: with metrics off, the
per-event hooks are skipped (``timed`` is False) and the others cost a call
on rare paths only, so dispatching stays as fast as without it.
"""

from __future__ import annotations

from django_pgpubsub.registry import Handler


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
