"""Normal channels (no ``!`` in the name) as queues in PostgreSQL: a row per message, taken
by exactly one receiver in any process, woken by a NOTIFY; a claim survives its cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from django_pgpubsub.channel_layer import messages
from django_pgpubsub.channel_layer.sending import Statement
from django_pgpubsub.hub import runtime
from django_pgpubsub.hub.hub import Hub

logger = logging.getLogger("django_pgpubsub.layers")


def statement(
    channel: str, pg_name: str, message: dict[str, Any], expiry: float, capacity: int
) -> Statement:
    """The SQL that queues ``message`` on ``channel`` unless it holds ``capacity``
    unexpired messages; it returns a row when the message was queued.

    Raises:
        TypeError: A value JSON cannot hold (other than bytes).
    """
    text = messages.encode(channel, message)
    params = (channel, text, float(expiry), channel, capacity, capacity, pg_name)
    return messages.QUEUE, params


async def claim(hub: Hub, channel: str, pg_name: str) -> dict[str, Any] | None:
    """Take the oldest unexpired message of ``channel``, or None if it has none.

    The claim runs on the hub's loop to its end whatever the caller does: if
    the caller is cancelled meanwhile, a message it took goes back, as it was,
    for the next receiver.
    """
    hub_loop, caller = runtime.hub_loop(), asyncio.get_running_loop()
    result: asyncio.Future[list[Any]] = caller.create_future()
    state: dict[str, Any] = {"rows": None, "abandoned": False}

    def hand_over(rows: list[Any] | None, error: BaseException | None) -> None:
        if result.done():  # cancelled meanwhile: abandon() puts the message back
            return
        if error is not None:
            result.set_exception(error)
        else:
            result.set_result(rows or [])

    async def run() -> None:  # on the hub's loop
        rows: list[Any] | None = None
        error: BaseException | None = None
        async with _lock(channel):  # a message put back comes before the next claim
            try:
                rows = await hub.execute(messages.CLAIM, (channel,))
            except Exception as exc:
                error = exc
            if state["abandoned"]:
                await _restore(hub, rows, pg_name)
                return
        state["rows"] = rows
        try:
            caller.call_soon_threadsafe(hand_over, rows, error)
        except RuntimeError:  # the caller's loop is closed: nobody takes it
            await _restore(hub, rows, pg_name)

    def start() -> None:
        hub_loop.create_task(run())

    def abandon() -> None:  # on the hub's loop, after start(), before a later claim's
        state["abandoned"] = True
        rows, state["rows"] = state["rows"], None
        if rows:
            hub_loop.create_task(_locked_restore(hub, rows, pg_name, channel))

    hub_loop.call_soon_threadsafe(start)
    try:
        rows = await result
    except asyncio.CancelledError:
        hub_loop.call_soon_threadsafe(abandon)
        raise
    if not rows:
        return None
    return messages.decode(rows[0][1])[1]


# One lock per normal channel received in this process, used on the hub's loop only.
_locks: dict[str, asyncio.Lock] = {}


def _lock(channel: str) -> asyncio.Lock:
    lock = _locks.get(channel)
    if lock is None:
        lock = _locks[channel] = asyncio.Lock()
    return lock


def _forget_after_fork() -> None:
    _locks.clear()  # a forked child has a hub loop of its own


os.register_at_fork(after_in_child=_forget_after_fork)


async def _locked_restore(hub: Hub, rows: list[Any], pg_name: str, channel: str) -> None:
    async with _lock(channel):
        await _restore(hub, rows, pg_name)


async def _restore(hub: Hub, rows: list[Any] | None, pg_name: str) -> None:
    """Put claimed ``rows`` back (same id: its place in the queue) and wake receivers."""
    if not rows:
        return
    row_id, body, expires_at = rows[0]
    channel = messages.decode(body)[0]
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await hub.execute(messages.RESTORE, (row_id, channel, body, expires_at, pg_name))
        except Exception:
            logger.exception("A message of channel %r was lost: it could not be put back.", channel)
