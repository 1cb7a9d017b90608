"""The hub's own thread and event loop, one per process.

Subscribers live on many loops: the ASGI server's, the short-lived loops of
``async_to_sync`` in threads, a test's ``asyncio.run``. A hub bound to one of
them would die with it, and a hub per loop would open a LISTEN connection per
loop. So the hubs of a process run on one daemon thread with a loop of its
own, and the other loops talk to it thread-safely: :func:`call` runs a
coroutine there, and the hub hands events to each subscriber's loop with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def hub_loop() -> asyncio.AbstractEventLoop:
    """The event loop of the hubs' thread, started on first use."""
    global _loop  # noqa: PLW0603 - one loop per process
    loop = _loop
    if loop is not None:
        return loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            started = threading.Event()
            thread = threading.Thread(
                target=_serve, args=(loop, started), name="django_pgpubsub hub", daemon=True
            )
            thread.start()
            started.wait()
            _loop = loop
        return _loop


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    loop.run_forever()


def on_hub_loop() -> bool:
    """Whether the caller runs on the hubs' thread."""
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


async def call(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the hubs' loop and wait for it from any loop.

    Cancelling the caller cancels the coroutine; what must survive that is
    shielded by the hub itself.
    """
    if on_hub_loop():
        return await coroutine
    future = asyncio.run_coroutine_threadsafe(coroutine, hub_loop())
    return await asyncio.wrap_future(future)


def _forget_after_fork() -> None:
    """A forked child has no hub thread: it starts its own on first use."""
    global _loop  # noqa: PLW0603 - one loop per process
    _loop = None


os.register_at_fork(after_in_child=_forget_after_fork)
