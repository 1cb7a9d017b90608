"""Statements sent on psycopg 3's libpq connection directly, their parameters bound, never
formatted: the async listening connection's fast path for NOTIFY and other simple statements.
"""

from __future__ import annotations

import asyncio
from typing import Any

# libpq's ExecStatus values (psycopg.pq.ExecStatus), without importing psycopg
# at module level: it may be missing (psycopg2).
_COMMAND_OK, _TUPLES_OK, _FATAL_ERROR = 1, 2, 7

# What each SQL text becomes for libpq: "%s" placeholders numbered "$1", "$2"...
_queries: dict[tuple[str, str], tuple[bytes, int]] = {}


def direct_statement(raw: Any, sql: str, params: tuple[Any, ...] | None) -> Statement | None:
    """``sql`` with ``params`` as a :class:`Statement` on ``raw``'s libpq
    connection, or None when psycopg must run it (parameters that are not all
    ``str``, other placeholders than ``%s``, a NUL or text the connection's
    encoding cannot hold: psycopg raises its own errors for those)."""
    encoding: str = raw.info.encoding
    key = (sql, encoding)
    known = _queries.get(key)
    try:
        if known is None:
            if params is None:
                known = (sql.encode(encoding), 0)
            else:
                parts = sql.split("%s")
                if any("%" in part for part in parts):
                    return None
                numbered = [parts[0]]
                for number, part in enumerate(parts[1:], 1):
                    numbered.extend((f"${number}", part))
                known = ("".join(numbered).encode(encoding), len(parts) - 1)
            if len(_queries) < 1000:  # the package's statements, not every LISTEN
                _queries[key] = known
        query, placeholders = known
        if params is None:
            return Statement(raw, query, None)
        if placeholders != len(params) or not all(type(p) is str for p in params):
            return None
        if any("\x00" in p for p in params):
            return None
        return Statement(raw, query, [p.encode(encoding) for p in params])
    except UnicodeEncodeError:
        return None


class Statement:
    """One statement sent to libpq directly; :meth:`run` reads its result.

    The connection's socket reader calls :meth:`wake` while it runs.
    """

    __slots__ = ("_error", "_rows", "_sent", "_values", "_waiter", "query", "raw", "running")

    def __init__(self, raw: Any, query: bytes, values: list[bytes] | None) -> None:
        self.raw, self.query, self._values = raw, query, values
        self.running = False  # sent, and its results not all read
        self._sent = False
        self._waiter: asyncio.Future[None] | None = None
        self._rows: list[Any] = []
        self._error: Exception | None = None

    def wake(self) -> None:
        """The socket is readable (or writable, while sending)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, loop: asyncio.AbstractEventLoop) -> None:
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def run(self, loop: asyncio.AbstractEventLoop, fileno: int) -> list[Any]:
        """Send the statement (unless done already), wait for its result.

        Called again after a cancellation, it carries on where it stopped.

        Returns:
            Its rows, if any.

        Raises:
            psycopg.Error: The statement failed, or the connection did.
        """
        pgconn = self.raw.pgconn
        if not self._sent:
            pgconn.send_query_params(self.query, self._values)
            self._sent = self.running = True
        while pgconn.flush():  # a large statement the socket could not take at once
            loop.add_writer(fileno, self.wake)
            try:
                await self._wait(loop)
            finally:
                loop.remove_writer(fileno)
            pgconn.consume_input()
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            await self._wait(loop)
        try:
            while (result := pgconn.get_result()) is not None:
                self._take(result)
        finally:
            self.running = False
        if self._error is not None:
            raise self._error
        return self._rows

    def _take(self, result: Any) -> None:
        from psycopg import errors  # noqa: PLC0415 - psycopg 3 may not be installed
        from psycopg.adapt import Transformer  # noqa: PLC0415

        status = result.status
        if status == _TUPLES_OK:
            if result.ntuples:
                transformer = Transformer(self.raw)
                transformer.set_pgresult(result)
                self._rows = transformer.load_rows(0, result.ntuples, tuple)
        elif status == _FATAL_ERROR:
            self._error = self._error or errors.error_from_result(
                result, encoding=self.raw.info.encoding
            )
        elif status != _COMMAND_OK:
            self._error = self._error or errors.InterfaceError(
                f"Unexpected result status {status} from {self.query!r}."
            )
