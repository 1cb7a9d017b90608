"""Graceful shutdown of a listener on SIGTERM and SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

logger = logging.getLogger("django_pgpubsub.listener")


class Stoppable(Protocol):
    """What can be stopped gracefully, as a :class:`~django_pgpubsub.listener.loop.Listener`."""

    @property
    def stopping(self) -> bool: ...

    def stop(self) -> None: ...


@contextmanager
def stop_on_signals(listener: Stoppable) -> Iterator[None]:
    """SIGTERM/SIGINT stop ``listener`` gracefully; a second one exits at once.

    Python installs signal handlers from the main thread only: in any other
    thread this installs nothing, and ``listener.stop()`` is how to stop it.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if listener.stopping:
            logger.warning("Second %s: exiting now.", name)
            raise SystemExit(128 + signum)
        # Stop first: should logging fail, or another signal interrupt its
        # write to stderr, the loop still stops.
        listener.stop()
        logger.warning("%s: stopping after the running handler.", name)

    if threading.current_thread() is not threading.main_thread():
        # Python installs signal handlers from the main thread only; a
        # listener run in a worker thread is stopped with listener.stop().
        logger.debug("Not in the main thread: SIGTERM/SIGINT handlers left alone.")
        yield
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
