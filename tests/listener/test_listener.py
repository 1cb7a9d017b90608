"""Listener in-process: run in a thread, stopped from another."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection, connections
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.test import override_settings

from django_pgpubsub import ConnectionLost, Event, Registry, conf, notify
from django_pgpubsub.listener.loop import Listener
from tests.helpers import ListenerThread, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def calls() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def running(calls: list[tuple[str, str]]) -> Iterator[ListenerThread]:
    handlers = Registry()

    def first(event: Event) -> None:
        calls.append(("first", event.payload))

    def second(event: Event) -> None:
        calls.append(("second", event.payload))

    handlers.register(first, "x", "y")
    handlers.register(second, "x")
    with ListenerThread(Listener(registry=handlers)).wait_connected() as running:
        yield running


def test_dispatches_in_order_and_stops_from_another_thread(
    running: ListenerThread, calls: list[tuple[str, str]]
) -> None:
    notify("x", "1")
    notify("y", "2")
    notify("x", "3")
    wait_until(lambda: len(calls) == 5, what="five handler calls")
    assert calls == [
        ("first", "1"),
        ("second", "1"),
        ("first", "2"),
        ("first", "3"),
        ("second", "3"),
    ]
    assert running.stop() == 3


def test_stop_before_run_returns_at_once() -> None:
    listener = Listener(["x"], registry=Registry())
    listener.stop()
    assert listener.run() == 0


def test_max_events_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Listener(["x"], max_events=0)


def test_channels_without_handlers() -> None:
    handlers = Registry()
    handlers.register(print, "x")
    assert Listener(["x", "y"], registry=handlers).channels_without_handlers() == {"y"}


def test_gives_up_after_the_configured_attempts() -> None:
    settings_dict = connections[conf.listener_database()].settings_dict
    port = settings_dict["PORT"]
    settings_dict["PORT"] = "1"  # nothing listens there
    try:
        with (
            override_settings(
                PGPUBSUB={"RECONNECT_MAX_ATTEMPTS": 2, "RECONNECT_INITIAL_DELAY": 0.01}
            ),
            pytest.raises(ConnectionLost, match="Cannot connect"),
        ):
            Listener(["x"], registry=Registry()).run()
    finally:
        settings_dict["PORT"] = port


def test_reconnect_delays_double_up_to_the_cap_with_jitter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings_dict = connections[conf.listener_database()].settings_dict
    port = settings_dict["PORT"]
    settings_dict["PORT"] = "1"  # nothing listens there
    limits = {
        "RECONNECT_MAX_ATTEMPTS": 6,
        "RECONNECT_INITIAL_DELAY": 0.04,
        "RECONNECT_MAX_DELAY": 0.16,
    }
    try:
        with (
            override_settings(PGPUBSUB=limits),
            caplog.at_level("WARNING", "django_pgpubsub"),
            pytest.raises(ConnectionLost),
        ):
            Listener(["x"], registry=Registry()).run()
    finally:
        settings_dict["PORT"] = port
    waits = [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]
    # Each wait lies between half and all of 0.04, 0.08, then the cap 0.16
    # (logged to 0.01 s).
    delays = [0.04, 0.08, 0.16, 0.16, 0.16]
    assert len(waits) == len(delays)
    for wait, delay in zip(waits, delays, strict=True):
        assert delay / 2 - 0.005 <= wait <= delay + 0.005


def test_a_reconnect_also_renews_the_handlers_django_connections() -> None:
    """Whatever broke the listener's connection likely broke Django's too."""
    observed: list[object] = []

    def on_connect(listener: Listener, reconnected: bool) -> None:
        default = connections["default"]
        if not reconnected:
            default.ensure_connection()  # as a handler would have left it
            assert listener.connection is not None
            with default.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [listener.connection.pid])
        else:
            observed.append(default.connection)
            listener.stop()

    running = ListenerThread(
        Listener(["x"], registry=Registry(), on_connect=on_connect, durable=False)
    )
    assert running.result(10) == 0
    assert observed == [None]


def test_listens_on_several_channels_with_server_side_binding_in_options(
    calls: list[tuple[str, str]],
) -> None:
    """Django's server_side_binding option does not break LISTEN of several channels."""
    settings_dict = connections[conf.listener_database()].settings_dict
    settings_dict["OPTIONS"] = {"server_side_binding": True}
    try:
        handlers = Registry()
        handlers.register(lambda event: calls.append(("y", event.payload)), "y")
        handlers.register(print, "x")
        listener = Listener(
            ["x", "y"],
            registry=handlers,
            max_events=1,
            on_connect=lambda _listener, _again: notify("y", "bound"),
        )
        assert listener.run() == 1
    finally:
        settings_dict["OPTIONS"] = {}
        connections[conf.listener_database()].close()
    assert calls == [("y", "bound")]


def listener_connection_parameters() -> dict[str, str]:
    """The libpq parameters of the connection a Listener opens."""
    seen: dict[str, str] = {}

    def record(listener: Listener, reconnected: bool) -> None:
        assert listener.connection is not None
        raw = listener.connection.raw
        seen.update(raw.info.get_parameters() if is_psycopg3 else raw.get_dsn_parameters())
        listener.stop()

    handlers = Registry()
    handlers.register(print, "x")
    Listener(["x"], registry=handlers, durable=False, on_connect=record).run()
    return seen


def test_the_listener_sets_tcp_keepalives_unless_options_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with override_settings(PGPUBSUB={"KEEPALIVE_INTERVAL": 7}):
        params = listener_connection_parameters()
    assert (params["keepalives_idle"], params["keepalives_interval"]) == ("7", "7")
    assert params["keepalives_count"] == "3"
    assert params["application_name"] == "django_pgpubsub listener"
    options = {"keepalives_idle": 55, "application_name": "mine"}
    monkeypatch.setitem(connections[conf.listener_database()].settings_dict, "OPTIONS", options)
    params = listener_connection_parameters()
    assert (params["keepalives_idle"], params["application_name"]) == ("55", "mine")


def test_every_listener_gets_every_plain_event_on_one_connection_each() -> None:
    """Two listeners: each plain event is handled twice, once in each, and
    each listens on one connection whatever its channel count."""
    handled: list[tuple[str, str]] = []
    first, second = Registry(), Registry()
    channels = [f"many.{i}" for i in range(5)]

    def recorder(name: str) -> Callable[[Event], None]:
        return lambda event: handled.append((name, event.payload))

    for name, handlers in (("first", first), ("second", second)):
        handlers.register(recorder(name), *channels)
    with (
        ListenerThread(Listener(registry=first, durable=False)).wait_connected(),
        ListenerThread(Listener(registry=second, durable=False)).wait_connected(),
    ):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'django_pgpubsub listener' AND datname = current_database()"
            )
            assert cursor.fetchone() == (2,)
        notify("many.3", "once")
        wait_until(lambda: len(handled) == 2, what="both listeners")
    assert sorted(handled) == [("first", "once"), ("second", "once")]


def test_at_start_it_waits_for_a_database_that_is_not_up_yet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's Unix socket appears only after the first attempts failed."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW unix_socket_directories")
        socket_dir = cursor.fetchone()[0].split(",")[0].strip()
        cursor.execute("SHOW port")
        port = cursor.fetchone()[0]
    socket_name = f".s.PGSQL.{port}"
    settings_dict = connections[conf.listener_database()].settings_dict
    saved = settings_dict["HOST"], settings_dict["PORT"]
    settings_dict["HOST"], settings_dict["PORT"] = str(tmp_path), port  # no server there yet
    handlers = Registry()
    handlers.register(print, "x")
    limits = {"RECONNECT_INITIAL_DELAY": 0.05, "RECONNECT_MAX_DELAY": 0.2}
    try:
        with (
            override_settings(PGPUBSUB=limits),
            caplog.at_level("WARNING", "django_pgpubsub"),
            ListenerThread(Listener(registry=handlers, durable=False)) as running,
        ):
            wait_until(lambda: "attempt 2, retrying" in caplog.text, what="two failed attempts")
            assert not running.connected.is_set()
            (tmp_path / socket_name).symlink_to(Path(socket_dir) / socket_name)
            running.wait_connected()
    finally:
        settings_dict["HOST"], settings_dict["PORT"] = saved
    assert f"Connected to {conf.listener_database()!r} again after" in caplog.text


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_the_listener_listens_on_the_listener_database_setting() -> None:
    got: list[Event] = []
    handlers = Registry()
    handlers.register(got.append, "x")

    def send(listener: Listener, reconnected: bool) -> None:
        notify("x", "on default")
        notify("x", "on other", using="other")

    with override_settings(PGPUBSUB={"LISTENER_DATABASE": "other"}):
        listener = Listener(["x"], registry=handlers, durable=False, max_events=1, on_connect=send)
        assert listener.run() == 1
    assert [e.payload for e in got] == ["on other"]
