"""What a hub's connection LISTENs to, and the rounds, on the hubs' thread, that bring it in
step with what the hub's subscribers want.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

from django_pgpubsub.db.aconnection import AsyncDriverConnection
from django_pgpubsub.exceptions import ConnectionLost


class Listening:
    """The LISTENs of one hub connection.

    Args:
        connection: The hub's current connection (None while it has none).
        wanted: The channels the hub's subscribers want now.
        prepare: Run at the start of each round: opens the connection if need be.
    """

    def __init__(
        self,
        connection: Callable[[], AsyncDriverConnection | None],
        wanted: Callable[[], Iterable[str]],
        prepare: Callable[[], Awaitable[None]],
    ) -> None:
        self._connection, self._wanted, self._prepare = connection, wanted, prepare
        self.channels: set[str] = set()
        self._uncertain = False  # a round was interrupted: ask the server
        self._round: asyncio.Task[None] | None = None

    def forget(self) -> None:
        """The connection is gone, and with it what it listened to."""
        self.channels = set()
        self._uncertain = False

    def start_round(self) -> asyncio.Task[None]:
        """The running round, or a new one: it sees every change made before it ends."""
        if self._round is None or self._round.done():
            self._round = asyncio.get_running_loop().create_task(self._run())
            self._round.add_done_callback(_consume_error)
        return self._round

    async def cancel(self) -> None:
        """Stop the running round, if any."""
        task = self._round
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await task

    async def _run(self) -> None:
        await self._prepare()
        while (connection := self._connection()) is not None:
            if self._uncertain:
                rows = await connection.execute("SELECT pg_listening_channels()")
                self.channels = {row[0] for row in rows}
                self._uncertain = False
            wanted = set(self._wanted())
            add, drop = sorted(wanted - self.channels), sorted(self.channels - wanted)
            if not add and not drop:
                return
            try:
                # One statement per channel: works with every OPTIONS (a
                # joined "LISTEN a; UNLISTEN b" cannot be prepared).
                for command, names in (("LISTEN", add), ("UNLISTEN", drop)):
                    for name in names:
                        await connection.listen([name], command)
                        if connection is not self._connection():
                            return
                        if command == "LISTEN":
                            self.channels.add(name)
                        else:
                            self.channels.discard(name)
            except ConnectionLost:
                return  # the hub reconnects, and listens to what is wanted then
            except BaseException:
                # Interrupted (the hub closes, or a surprise): whether the
                # statement took effect is unknown, so the next round asks.
                self._uncertain = True
                raise


def _consume_error(task: asyncio.Task[None]) -> None:
    """A round's error goes to the subscribers that await it; none is left unread."""
    if not task.cancelled():
        task.exception()
