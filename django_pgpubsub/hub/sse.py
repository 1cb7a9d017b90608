"""The body of an ``EventStreamView`` response, and what ends it early: its client leaving,
``SSE_MAX_AGE``, or the server stopping.
"""

from __future__ import annotations

import asyncio
import functools
import re
import signal
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.hub.subscription import Subscription, resync_event
from django_pgpubsub.vocabulary.events import Event

KEEPALIVE = b": keepalive\n\n"
#: Sent first: sets ``EventSource.lastEventId``, which a browser sends back
#: as ``Last-Event-ID`` when it reconnects, so the new stream can tell.
STREAM_ID = b"id: pgpubsub\n\n"
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")  # the SSE spec's three line endings

# The signals on which ASGI servers (uvicorn, gunicorn's workers) shut down.
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# Every client of a channel is sent the same event object: it is formatted
# once, not once per client (equal events format alike).
@functools.lru_cache(maxsize=256)
def format_event(event: Event) -> bytes:
    """``event: <channel>``, one ``data:`` line per payload line, a blank line."""
    data = "".join(f"data: {line}\n" for line in _LINE_BREAKS.split(event.payload))
    return f"event: {event.channel}\n{data}\n".encode()


class _Ended(ConnectionLost):
    """Not an error: the stream reached its maximum age, or the server stops."""


class EventStream:
    """The body of an event stream; Django calls :meth:`close` when the response ends.

    Args:
        subscription: The hub subscription it streams.
        keepalive: Seconds without an event before a comment line goes out.
        max_age: Seconds after which the stream ends (``None``: never).
        resync: Start with a ``pgpubsub.resync`` event (the client reconnected).
    """

    def __init__(
        self,
        subscription: Subscription,
        keepalive: float,
        *,
        max_age: float | None = None,
        resync: bool = False,
    ) -> None:
        self.subscription = subscription
        self.keepalive = keepalive
        self.max_age = max_age
        self.resync = resync
        self._timer: asyncio.TimerHandle | None = None
        # A response cancelled before its body starts (the client left while
        # middleware ran, or while the headers went out) is never iterated
        # nor closed: the subscription is released when the stream is dropped.
        weakref.finalize(self, subscription.close)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._generate()

    async def _generate(self) -> AsyncIterator[bytes]:
        streams = _open_streams()
        streams.add(self)
        if self.max_age is not None:
            self._timer = asyncio.get_running_loop().call_later(self.max_age, self.end)
        try:
            yield STREAM_ID
            if self.resync:
                yield format_event(resync_event("reconnected"))
            async for event in self.subscription.events(timeout=self.keepalive):
                yield KEEPALIVE if event is None else format_event(event)
        except _Ended:
            return
        finally:
            # When the client disconnects, Django 5 (or cancel_on_disconnect()
            # on 4.2) cancels the response: CancelledError lands here.
            # close() covers the other endings.
            streams.discard(self)
            self.close()

    def end(self) -> None:
        """End the stream once what is queued is sent (from its event loop's thread)."""
        self.subscription.fail(_Ended("The stream ended."))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.subscription.close()


# The open streams of each event loop (one loop per server process, as a rule).
_streams: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[EventStream]] = (
    weakref.WeakKeyDictionary()
)
_stopping: set[asyncio.AbstractEventLoop] = set()


def _open_streams() -> weakref.WeakSet[EventStream]:
    loop = asyncio.get_running_loop()
    streams = _streams.get(loop)
    if streams is None:
        streams = _streams[loop] = weakref.WeakSet()
    return streams


def stopping() -> bool:
    """Whether the server of the running event loop is shutting down."""
    return asyncio.get_running_loop() in _stopping


def _end_streams(loop: asyncio.AbstractEventLoop) -> None:
    _stopping.add(loop)
    for stream in list(_streams.get(loop, ())):
        stream.end()


def end_streams_at_shutdown() -> None:
    """End the running loop's streams when the server is told to shut down.

    The server's own handler of SIGINT and SIGTERM still runs (first the
    server's, then ours), and is left in place: ours wraps it. Only a Python
    handler is wrapped; where the signal kills the process anyway (the
    default action), there is nothing to wait for. Called for each stream;
    cheap when the handler is ours already.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    loop = asyncio.get_running_loop()
    for number in SHUTDOWN_SIGNALS:
        current = signal.getsignal(number)
        if callable(current) and getattr(current, "pgpubsub_loop", None) is not loop:
            # Ours for another loop (an earlier asyncio.run()): wrap the
            # server's handler afresh rather than a chain of ours.
            server_handler = getattr(current, "pgpubsub_server", current)
            signal.signal(number, _wrap(server_handler, loop))


def _wrap(
    server_handler: Callable[[int, FrameType | None], Any], loop: asyncio.AbstractEventLoop
) -> Callable[[int, FrameType | None], Any]:
    def handler(number: int, frame: FrameType | None) -> Any:
        # A signal handler runs between two bytecodes of the loop's thread:
        # the streams are ended by the loop itself, at its next turn.
        if not loop.is_closed():
            loop.call_soon_threadsafe(_end_streams, loop)
        return server_handler(number, frame)

    handler.pgpubsub_loop = loop  # type: ignore[attr-defined]
    handler.pgpubsub_server = server_handler  # type: ignore[attr-defined]
    return handler
