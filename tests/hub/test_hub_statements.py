"""The statements of the hub's (and AsyncPubSub's) connection that run on
libpq directly: the same rows and errors as psycopg's, cancellation safe,
notifications read meanwhile kept, and no wake-up of the reader for nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_pgpubsub.db.aconnection import AsyncDriverConnection, open_async_connection
from django_pgpubsub.vocabulary.events import Event

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not is_psycopg3, reason="the hub's connection is psycopg 3's"),
]

T = TypeVar("T")


def run(scenario: Callable[[AsyncDriverConnection], Awaitable[T]]) -> T:
    async def main() -> T:
        connection = await open_async_connection()
        try:
            return await asyncio.wait_for(scenario(connection), 20)
        finally:
            await connection.close()

    return asyncio.run(main())


class CountingExecute:
    """Counts the statements that go through psycopg's own ``execute``."""

    def __init__(self, connection: AsyncDriverConnection) -> None:
        self.calls: list[str] = []
        self._execute = connection.raw.execute
        connection.raw.execute = self

    async def __call__(self, sql: str, params: Any = None) -> Any:
        self.calls.append(sql)
        return await self._execute(sql, params)


def test_str_parameters_run_on_libpq_with_psycopgs_rows_and_others_on_psycopg() -> None:
    statements: list[tuple[str, tuple[Any, ...] | None]] = [
        ("SELECT %s, upper(%s), 1, NULL::int, now()::date", ("a'é", "ab")),
        ("SELECT pg_notify(%s, %s)", ("c", "x")),
        ("SELECT 'no %% parameters'", None),
        ("SELECT generate_series(1, 3)", None),
        ("SET application_name = 'direct'", None),
    ]

    async def scenario(connection: AsyncDriverConnection) -> None:
        through_psycopg = CountingExecute(connection)
        for sql, params in statements:
            rows = await connection.execute(sql, params)
            assert rows == await connection._execute_psycopg(sql, params), sql
        assert len(through_psycopg.calls) == len(statements)  # only the comparisons
        assert await connection.execute("SELECT %s", ("a'é",)) == [("a'é",)]
        assert len(through_psycopg.calls) == len(statements)
        # Not all str, or other placeholders: psycopg's own rules apply.
        assert await connection.execute("SELECT %s + 1", (41,)) == [(42,)]
        assert await connection.execute("SELECT '%%' || %s", ("x",)) == [("%x",)]
        assert len(through_psycopg.calls) == len(statements) + 2

    run(scenario)


def test_what_psycopg_refuses_is_refused_as_psycopg_does() -> None:
    import psycopg  # psycopg 3 alone: the psycopg2 run collects this module

    async def scenario(connection: AsyncDriverConnection) -> None:
        with pytest.raises(psycopg.DataError, match="NUL"):
            await connection.execute("SELECT %s", ("a\x00b",))
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            await connection.execute("SELECT %s::int", ("x",))
        with pytest.raises(psycopg.ProgrammingError, match="placeholders"):
            await connection.execute("SELECT %s, %s", ("one",))
        with pytest.raises(psycopg.errors.UndefinedColumn):
            await connection.execute("SELECT nope")
        assert await connection.execute("SELECT %s", ("still usable",)) == [("still usable",)]

    run(scenario)


def test_a_cancelled_statement_runs_to_its_end_and_the_next_gets_its_own_rows() -> None:
    async def scenario(connection: AsyncDriverConnection) -> None:
        await connection.execute("LISTEN cancelled")
        slow = asyncio.create_task(
            connection.execute("SELECT pg_notify(%s, %s) FROM pg_sleep(0.3)", ("cancelled", "x"))
        )
        while not connection._lock.locked():  # sent, and waiting for its result
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await connection.execute("SELECT %s", ("next",)) == [("next",)]
        events: list[Event] = []
        while not events:  # the cancelled NOTIFY went: cancelling cannot unsend it
            assert await connection.wait(10)
            events = connection.drain()
        assert [(e.channel, e.payload) for e in events] == [("cancelled", "x")]

    run(scenario)


def test_notifications_read_by_a_statement_wake_the_reader_and_its_own_result_does_not() -> None:
    async def scenario(connection: AsyncDriverConnection) -> None:
        await connection.execute("LISTEN own")
        connection.drain()
        await connection.wait(0)
        for _ in range(5):
            await connection.execute("SELECT %s", ("quiet",))
            await asyncio.sleep(0.01)  # the loop sees the socket again
            assert not await connection.wait(0), "woken for a statement's own result"
        # A session hears its own NOTIFY: it comes with the statement's result.
        await connection.execute("SELECT pg_notify(%s, %s)", ("own", "heard"))
        assert await connection.wait(0)
        assert [(e.channel, e.payload) for e in connection.drain()] == [("own", "heard")]

    run(scenario)


def test_a_statement_run_on_raw_by_the_application_leaves_ours_working() -> None:
    async def scenario(connection: AsyncDriverConnection) -> None:
        await connection.raw.execute("SELECT 1")  # psycopg removes the socket's reader after it
        assert await connection.execute("SELECT %s", ("ours",)) == [("ours",)]

    run(scenario)
