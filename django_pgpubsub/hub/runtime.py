"""The hubs' own thread and event loop, one per process; :func:`call` runs a coroutine there
from any other loop.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    Two ``call_soon_threadsafe`` and no more: every send of the Channels layer
    takes this way, and ``run_coroutine_threadsafe`` with ``wrap_future``
    (a ``concurrent.futures.Future`` between two asyncio ones) cost twice as much.
    """
    if on_hub_loop():
        return await coroutine
    hub, caller = hub_loop(), asyncio.get_running_loop()
    result: asyncio.Future[T] = caller.create_future()
    started: list[asyncio.Task[T]] = []

    def start() -> None:
        task = hub.create_task(coroutine)
        started.append(task)
        task.add_done_callback(finished)

    def finished(task: asyncio.Task[T]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here: the caller's loop may be gone
        with contextlib.suppress(RuntimeError):  # it is: nobody waits
            caller.call_soon_threadsafe(hand_over, task)

    def hand_over(task: asyncio.Task[T]) -> None:
        if result.done():  # the caller was cancelled meanwhile
            return
        if task.cancelled():
            result.cancel()
        elif (error := task.exception()) is not None:
            result.set_exception(error)
        else:
            result.set_result(task.result())

    def cancel() -> None:  # after start(): one loop runs its callbacks in order
        for task in started:
            task.cancel()

    hub.call_soon_threadsafe(start)
    try:
        return await result
    except asyncio.CancelledError:
        hub.call_soon_threadsafe(cancel)
        raise


def _forget_after_fork() -> None:
    """A forked child has no hub thread: it starts its own on first use."""
    global _loop  # noqa: PLW0603 - one loop per process
    _loop = None


os.register_at_fork(after_in_child=_forget_after_fork)
