"""connect() and PubSub: the seed pgpubsub API on a dedicated connection."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections, transaction

from django_pgpubsub import (
    ConnectionLost,
    Event,
    InvalidChannel,
    PubSub,
    Registry,
    conf,
    connect,
    notify,
)
from django_pgpubsub.db.waits import wait_readable
from django_pgpubsub.listener.loop import Listener
from tests.helpers import ListenerThread, collect, nothing_arrives, wait_until
from tests.roles import ROLE_PASSWORD, create_role

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def backend_application_name(pid: int) -> str | None:
    """The backend's application_name; None when there is no such backend."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
        return None if row is None else str(row[0])


def test_readme_session(pubsub: PubSub) -> None:
    pubsub.listen("test")
    pubsub.notify("test", "message 1")
    event = collect(pubsub, 1)[0]
    assert event == Event("test", "message 1", pubsub.pid)
    assert repr(event) == f"Event(pid={pubsub.pid}, channel='test', payload='message 1')"


def test_dedicated_connection_not_djangos(pubsub: PubSub) -> None:
    assert pubsub.pid == pubsub.conn.info.backend_pid
    connection.ensure_connection()
    assert pubsub.pid != connection.connection.info.backend_pid
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pubsub.pid


def test_options_reach_the_server() -> None:
    connection.settings_dict["OPTIONS"] = {
        "application_name": "from-options",
        "connect_timeout": 5,
    }
    try:
        with connect() as ps:
            assert backend_application_name(ps.pid) == "from-options"
        with connect(application_name="override") as ps:
            assert backend_application_name(ps.pid) == "override"
    finally:
        connection.settings_dict["OPTIONS"] = {}


def test_a_bad_option_is_the_servers_error() -> None:
    with pytest.raises(ConnectionLost, match="sslmode"):
        connect(sslmode="no-such-mode")


def test_unknown_alias_is_improperly_configured() -> None:
    with pytest.raises(ImproperlyConfigured, match="'nope'"):
        connect("nope")


def test_get_event_never_blocks_and_keeps_order(pubsub: PubSub) -> None:
    pubsub.listen("q")
    started = time.monotonic()
    assert pubsub.get_event() is None
    assert time.monotonic() - started < 0.5
    for i in range(5):
        notify("q", str(i))
    assert [e.payload for e in collect(pubsub, 5)] == ["0", "1", "2", "3", "4"]
    assert pubsub.get_event() is None


def test_event_pid_is_the_senders_backend(pubsub: PubSub) -> None:
    pubsub.listen("who")
    with connect() as sender:
        sender.notify("who", "hi")
        [event] = collect(pubsub, 1)
        assert event.pid == sender.pid != pubsub.pid


def test_events_yields_timeouts_only_when_asked(pubsub: PubSub) -> None:
    pubsub.listen("ev")
    stream = pubsub.events(select_timeout=0.05, yield_timeouts=True)
    assert next(stream) is None
    notify("ev", "one")
    received = next(e for e in stream if e is not None)
    assert received.payload == "one"

    notify("ev", "two")
    quiet = pubsub.events(select_timeout=0.05)
    assert next(quiet).payload == "two"


def test_listen_several_unlisten_one_then_all(pubsub: PubSub) -> None:
    pubsub.listen("a", "b", "c")
    assert pubsub.channels == frozenset({"a", "b", "c"})
    pubsub.unlisten("b")
    assert pubsub.channels == frozenset({"a", "c"})
    for channel in ("a", "b", "c"):
        notify(channel, channel)
    assert sorted(e.channel for e in collect(pubsub, 2)) == ["a", "c"]
    assert nothing_arrives(pubsub)
    pubsub.unlisten()
    assert pubsub.channels == frozenset()
    notify("a", "late")
    assert nothing_arrives(pubsub)


def test_unlisten_drops_events_already_received(pubsub: PubSub) -> None:
    pubsub.listen("a", "b")
    notify("a", "1")
    notify("b", "2")
    time.sleep(0.2)  # both are now in the socket buffer
    pubsub.unlisten("a")
    assert [e.payload for e in collect(pubsub, 1)] == ["2"]
    assert pubsub.get_event() is None


def test_listen_checks_every_channel_before_any(pubsub: PubSub) -> None:
    with pytest.raises(InvalidChannel):
        pubsub.listen("fine", "x" * 64)
    assert pubsub.channels == frozenset()


def test_close_and_context_manager_release_the_backend() -> None:
    with connect(application_name="closing") as ps:
        pid = ps.pid
        assert backend_application_name(pid) == "closing"
    assert ps.closed
    wait_until(lambda: backend_application_name(pid) is None, 5, "the backend to exit")
    ps.close()  # closing twice is harmless


def test_terminated_backend_raises_connection_lost(pubsub: PubSub) -> None:
    pubsub.listen("x")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pubsub.pid])
    with pytest.raises(ConnectionLost):
        for _ in range(100):
            pubsub.get_event()
            time.sleep(0.02)


def test_self_notification_in_transaction_dedupes_identical_pairs(pubsub: PubSub) -> None:
    pubsub.listen("dup")
    with transaction.atomic():
        notify("dup", "same")
        notify("dup", "same")
        notify("dup", "other")
    assert [e.payload for e in collect(pubsub, 2)] == ["same", "other"]
    assert nothing_arrives(pubsub)


def backend_state(pid: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid])
        return str(cursor.fetchone()[0])


def test_pubsub_and_the_listener_stay_in_autocommit(pubsub: PubSub) -> None:
    """Neither holds a transaction open, which would stop PostgreSQL from
    cleaning its notification queue."""
    pubsub.listen("a")
    pubsub.notify("a", "x")
    assert [e.payload for e in collect(pubsub, 1)] == ["x"]
    assert pubsub.conn.autocommit
    assert backend_state(pubsub.pid) == "idle"
    handlers = Registry()
    handlers.register(print, "a")
    with ListenerThread(Listener(registry=handlers)).wait_connected() as running:
        assert running.listener.connection is not None
        listener_pid = running.listener.connection.pid
        wait_until(lambda: backend_state(listener_pid) == "idle", what="the listener idle")
        assert running.listener.connection.raw.autocommit


def waiting_on_its_socket(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside ``wait_readable()``: blocked on the socket."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code is wait_readable.__code__:
            return True
        frame = frame.f_back
    return False


def test_get_event_waits_up_to_select_timeout_for_an_event(pubsub: PubSub) -> None:
    pubsub.listen("q")
    got: list[Event | None] = []
    waiter = threading.Thread(target=lambda: got.append(pubsub.get_event(select_timeout=30)))
    waiter.start()
    try:
        wait_until(lambda: waiting_on_its_socket(waiter), 10, "get_event() to wait")
        with connect() as sender:  # another connection, after get_event() began
            sender.notify("q", "late")
            waiter.join(10)
    finally:
        waiter.join(30)
    assert [event.payload if event else None for event in got] == ["late"]
    assert got[0] is not None
    assert got[0].pid != pubsub.pid


def test_get_event_returns_none_once_select_timeout_passed(pubsub: PubSub) -> None:
    pubsub.listen("q")
    started = time.monotonic()
    assert pubsub.get_event(select_timeout=0.2) is None
    assert 0.2 <= time.monotonic() - started < 5


def test_get_events_returns_every_event_waiting_in_order_or_none(pubsub: PubSub) -> None:
    pubsub.listen("q")
    assert pubsub.get_events() is None
    assert pubsub.get_events(select_timeout=0.05) is None
    for i in range(3):
        notify("q", str(i))
    # PostgreSQL delivers in commit order: once this connection's own NOTIFY
    # has returned, the three before it have arrived as well.
    pubsub.notify("q", "last")
    events = pubsub.get_events()
    assert events is not None
    assert [event.payload for event in events] == ["0", "1", "2", "last"]
    assert pubsub.get_events() is None


def test_connect_takes_psycopg2s_keywords() -> None:
    """pgpubsub.connect(user=..., database=...): the keywords psycopg2 takes."""
    listener = connections[conf.listener_database()].settings_dict
    elsewhere = connections["other"].settings_dict["NAME"]
    assert elsewhere != listener["NAME"]
    where = {"host": listener["HOST"], "port": listener["PORT"]}

    def session(pubsub: PubSub) -> tuple[str, str]:
        with pubsub.conn.cursor() as cursor:
            cursor.execute("SELECT current_database(), current_user")
            database, user = cursor.fetchone()
            return str(database), str(user)

    with connect(database=elsewhere, user=listener["USER"], **where) as pubsub:
        assert session(pubsub) == (elsewhere, listener["USER"])
        pubsub.listen("q")
        pubsub.notify("q", "here")
        assert pubsub.get_event(select_timeout=10) == Event("q", "here", pubsub.pid)
    with connect(dbname=elsewhere) as pubsub:
        assert session(pubsub)[0] == elsewhere
    # USER of the alias would win over a user in OPTIONS: user= overrides it.
    create_role("pgpubsub_connect")
    with connect(user="pgpubsub_connect", password=ROLE_PASSWORD, **where) as pubsub:
        assert session(pubsub) == (listener["NAME"], "pgpubsub_connect")


def test_connect_refuses_both_database_and_dbname() -> None:
    with pytest.raises(TypeError, match=r"Pass database= or dbname= .*, not both\."):
        connect(database="a", dbname="b")


def test_a_wait_ends_when_the_connection_breaks(pubsub: PubSub) -> None:
    pubsub.listen("x")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pubsub.pid])
    started = time.monotonic()
    with pytest.raises(ConnectionLost):
        pubsub.get_event(select_timeout=60)
    assert time.monotonic() - started < 30
