"""Waiting with a timeout: for a socket to be readable, or for an ``asyncio.Event``."""

from __future__ import annotations

import asyncio
import selectors
from typing import Protocol


class HasFileno(Protocol):
    def fileno(self) -> int: ...


def wait_readable(fileobj: int | HasFileno, timeout: float | None) -> bool:
    """Wait until ``fileobj`` can be read, or ``timeout`` seconds pass.

    ``selectors``, unlike ``select.select()``, works for descriptors of 1024
    and above, which a busy process reaches.

    Returns:
        True when it can be read.
    """
    with selectors.DefaultSelector() as selector:
        selector.register(fileobj, selectors.EVENT_READ)
        return bool(selector.select(timeout))


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event``; ``False`` if ``timeout`` seconds passed first.

    A timer instead of ``asyncio.wait_for``, which before Python 3.12 can
    swallow a cancellation that comes as the event is set (a task then never
    stops), and which costs a task per wait.
    """
    if timeout is None:
        await event.wait()
        return True
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        event.set()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await event.wait()
    finally:
        timer.cancel()
    if expired:
        event.clear()  # set by the timer, not by what it stands for
        return False
    return True
