"""The dedicated connection at the edges: a connection lost with notifications
already received, prepared statements, standbys, and memory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_pgpubsub import ConnectionLost, Registry, aconnect, connect, notify_many
from django_pgpubsub.db.aconnection import open_async_connection
from django_pgpubsub.db.connection import open_connection
from django_pgpubsub.db.drivers import DriverConnection
from django_pgpubsub.db.listening_connection import ListeningConnection
from django_pgpubsub.db.waits import wait_readable
from django_pgpubsub.listener.loop import Listener
from tests.helpers import collect, database_url, in_socket, run_sql, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.fixture
def lost_with_five_unread() -> Iterator[DriverConnection]:
    """A connection whose backend was terminated after five notifications
    reached its socket, none of them read yet."""
    listening = open_connection()
    try:
        listening.execute("LISTEN lost")
        notify_many(("lost", f"lost-{i}") for i in range(5))
        wait_until(lambda: in_socket(listening, b"lost-4"), what="the notifications")
        terminate(listening.pid)
        yield listening
    finally:
        listening.close()


def drain_until_lost(listening: DriverConnection) -> list[str]:
    """The payloads drain() hands over before it raises ConnectionLost."""
    received = []
    with pytest.raises(ConnectionLost):
        for _ in range(10):
            events = listening.drain()
            received.extend(events)
            if not events:
                wait_readable(listening, 1)
    return [e.payload for e in received]


def test_drain_delivers_what_was_received_before_reporting_the_loss(
    lost_with_five_unread: DriverConnection,
) -> None:
    assert drain_until_lost(lost_with_five_unread) == [f"lost-{i}" for i in range(5)]


def test_notifications_read_by_a_failing_statement_are_still_delivered(
    lost_with_five_unread: DriverConnection,
) -> None:
    """The listener's keepalive query can be what finds the loss: the
    notifications the driver read while running it come first."""
    listening = lost_with_five_unread
    wait_until(lambda: in_socket(listening, b"terminating connection"), what="the FATAL")
    with pytest.raises(ConnectionLost):
        listening.execute("SELECT 1")
    assert drain_until_lost(listening) == [f"lost-{i}" for i in range(5)]


# psycopg 3 prepares every statement with prepare_threshold=0, and binds
# parameters server-side with server_side_binding; psycopg2 has neither option.
PREPARING_OPTIONS: dict[str, Any] = (
    {"server_side_binding": True, "prepare_threshold": 0} if is_psycopg3 else {}
)


@pytest.fixture
def preparing_options() -> Iterator[dict[str, Any]]:
    """The default alias's OPTIONS set to prepare every statement, for this test."""
    settings_dict = connections["default"].settings_dict
    saved = settings_dict.get("OPTIONS", {})
    settings_dict["OPTIONS"] = {**saved, **PREPARING_OPTIONS}
    try:
        yield settings_dict["OPTIONS"]
    finally:
        settings_dict["OPTIONS"] = saved
        connections["default"].close()


def test_the_listener_listens_on_several_channels_with_prepared_statements(
    preparing_options: dict[str, Any],
) -> None:
    seen: list[tuple[str, str]] = []
    handlers = Registry()
    handlers.register(lambda event: seen.append((event.channel, event.payload)), "a", "b", "c")

    def send(listener: Listener, reconnected: bool) -> None:
        notify_many([("a", "1"), ("b", "2"), ("c", "3")])

    listener = Listener(["a", "b", "c"], registry=handlers, max_events=3, on_connect=send)
    assert listener.run() == 3
    assert seen == [("a", "1"), ("b", "2"), ("c", "3")]


def test_pubsub_listens_unlistens_and_notifies_with_prepared_statements() -> None:
    with connect(**PREPARING_OPTIONS) as ps:
        ps.listen("a", "b", "c")
        ps.unlisten("b")
        for channel in ("a", "b", "c"):
            ps.notify(channel, channel)
        assert [e.payload for e in collect(ps, 2)] == ["a", "c"]
        ps.unlisten()
        assert ps.channels == frozenset()


psycopg3_only = pytest.mark.skipif(
    not is_psycopg3, reason="psycopg 3's notify handlers and notifies() generator"
)


@psycopg3_only
def test_reading_the_driver_notifies_directly_copies_nothing_into_pubsub() -> None:
    with connect() as ps:
        ps.listen("direct")
        notify_many(("direct", str(i)) for i in range(3))
        read = [n.payload for n in ps.conn.notifies(timeout=10, stop_after=3)]
        assert read == ["0", "1", "2"]
        ps.notify("elsewhere")  # a statement of ours: nothing left to catch
        assert ps.get_event() is None


@pytest.mark.skipif(is_psycopg3, reason="psycopg2's notifies list")
def test_items_taken_from_psycopg2s_notifies_list_are_not_returned_again() -> None:
    with connect() as ps:
        ps.listen("direct")
        notify_many(("direct", str(i)) for i in range(3))

        def all_polled() -> bool:
            ps.conn.poll()
            return len(ps.conn.notifies) == 3

        wait_until(all_polled, what="three notifications")
        assert ps.conn.notifies.pop(0).payload == "0"  # the application's now
        assert [ps.get_event().payload for _ in range(2)] == ["1", "2"]  # type: ignore[union-attr]
        assert ps.get_event() is None


def test_unread_notifications_caught_during_statements_are_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Both drivers: psycopg 3's handler backlog and psycopg2's notifies list.
    monkeypatch.setattr(DriverConnection, "MAX_UNREAD", 50)
    with connect() as ps:
        ps.listen("flood")
        notify_many(("flood", f"flood-{i:03}") for i in range(200))
        wait_until(lambda: in_socket(ps._connection, b"flood-199"), what="the flood")
        with caplog.at_level("WARNING", "django_pgpubsub"):
            ps.notify("elsewhere")  # psycopg reads all 200 while running it
            ps.notify("elsewhere")
        kept = []
        while (event := ps.get_event()) is not None:
            kept.append(event.payload)
        assert kept == [f"flood-{i:03}" for i in range(150, 200)]
        assert [r.getMessage() for r in caplog.records] == [
            "Over 50 notifications received on 'default' were not read; dropping the "
            "oldest. Read them (get_event()), or UNLISTEN."
        ]


@psycopg3_only
def test_async_unread_notifications_are_bounded_with_the_same_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The async connection shares the sync one's core: it drops the oldest
    # past MAX_UNREAD and says so once (it used to drop them silently).
    monkeypatch.setattr(ListeningConnection, "MAX_UNREAD", 50)
    url = database_url(connection.settings_dict)
    flood = (
        "SELECT pg_notify('flood', 'flood-' || lpad(i::text, 3, '0')) "
        "FROM generate_series(0, 199) i"
    )

    async def scenario() -> list[str]:
        async with await aconnect() as ps:
            await ps.listen("flood")
            run_sql(url, flood)
            wait_until(lambda: in_socket(ps.conn, b"flood-199"), what="the flood")
            with caplog.at_level("WARNING", "django_pgpubsub"):
                await ps.notify("elsewhere", "")  # psycopg reads all 200 meanwhile
                await ps.notify("elsewhere", "")
            kept: list[str] = []
            async for event in ps.events(timeout=0.5):
                if event is None:
                    return kept
                kept.append(event.payload)
            raise AssertionError("events() ended")

    kept = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert kept == [f"flood-{i:03}" for i in range(150, 200)]
    assert [r.getMessage() for r in caplog.records] == [
        "Over 50 notifications received on 'default' were not read; dropping the "
        "oldest. Read them (get_event()), or UNLISTEN."
    ]


@psycopg3_only
def test_async_pubsub_listens_on_several_channels_with_prepared_statements() -> None:
    async def scenario() -> list[str]:
        async with await aconnect(**PREPARING_OPTIONS) as ps:
            await ps.listen("a", "b", "c")
            await ps.unlisten("b", "c")
            await ps.listen("c")
            for channel in ("a", "b", "c"):
                await ps.notify(channel, channel)
            events = ps.events()
            return [(await anext(events)).payload for _ in range(2)]

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == ["a", "c"]


@psycopg3_only
def test_async_drain_delivers_what_a_failing_statement_read() -> None:
    url = database_url(connection.settings_dict)

    async def scenario() -> list[str]:
        listening = await open_async_connection()
        try:
            await listening.execute("LISTEN lost")
            run_sql(url, "SELECT pg_notify('lost', 'lost-' || i) FROM generate_series(0, 4) i")
            wait_until(lambda: in_socket(listening.raw, b"lost-4"), what="the notifications")
            run_sql(url, "SELECT pg_terminate_backend(%s)", (listening.pid,))
            wait_until(
                lambda: in_socket(listening.raw, b"terminating connection"), what="the FATAL"
            )
            with pytest.raises(ConnectionLost):
                await listening.execute("SELECT 1")
            received = []
            with pytest.raises(ConnectionLost):
                for _ in range(10):
                    received.extend(listening.drain())
            return [e.payload for e in received]
        finally:
            await listening.close()

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == [f"lost-{i}" for i in range(5)]
