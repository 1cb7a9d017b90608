"""The listener's self-probe: a connection that answers queries but no longer
receives notifications is found and replaced."""

from __future__ import annotations

import logging
import time

import pytest
from django.db import connections
from django.test import override_settings

from django_pgpubsub import Event, Registry, conf, notify
from django_pgpubsub.listener.liveness import Probe, presence_key, presence_lock_ids
from django_pgpubsub.listener.loop import Listener
from tests.helpers import ListenerThread, wait_until
from tests.pgproxy import NotificationDroppingProxy

KEEPALIVE = 1.0


@pytest.mark.django_db(transaction=True)
@override_settings(PGPUBSUB={"KEEPALIVE_INTERVAL": KEEPALIVE, "RECONNECT_INITIAL_DELAY": 0.01})
def test_a_connection_that_stopped_receiving_is_replaced_within_two_intervals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "django_pgpubsub")
    got: list[str] = []
    sabotaged: list[float] = []
    connects: list[tuple[bool, float]] = []
    handlers = Registry()

    def handle(event: Event) -> None:
        got.append(event.payload)
        if event.payload == "unlisten":
            # Handlers run in the listener's thread: its connection is safe to
            # use here. Queries still work; notifications no longer arrive.
            assert listener.connection is not None
            with listener.connection.raw.cursor() as cursor:
                cursor.execute("UNLISTEN *")
                cursor.execute("SELECT 1")
            sabotaged.append(time.monotonic())

    handlers.register(handle, "x")
    listener = Listener(
        ["x"],
        registry=handlers,
        durable=False,
        on_connect=lambda _listener, again: connects.append((again, time.monotonic())),
    )
    with ListenerThread(listener).wait_connected():
        notify("x", "unlisten")
        wait_until(lambda: bool(sabotaged), what="the sabotage")
        notify("x", "lost")  # sent while the connection hears nothing
        wait_until(lambda: len(connects) == 2, 4 * KEEPALIVE, "a reconnect")
        assert connects[1][0] is True
        assert connects[1][1] - sabotaged[0] <= 2 * KEEPALIVE
        notify("x", "after")
        wait_until(lambda: "after" in got, what="an event after the reconnect")
    assert got == ["unlisten", "after"]
    lost = [r for r in caplog.records if r.getMessage().startswith("Lost the connection")]
    assert len(lost) == 1
    assert "self-probe" in lost[0].getMessage()
    again = [r for r in caplog.records if "again after" in r.getMessage()]
    assert len(again) == 1
    # The outage counts from the last sign of life: the "unlisten" event.
    assert again[0].__dict__["outage_seconds"] >= connects[1][1] - sabotaged[0] - 0.1


@pytest.mark.django_db(transaction=True)
@override_settings(PGPUBSUB={"KEEPALIVE_INTERVAL": 0.2})
def test_an_idle_listener_probes_without_dispatching_the_probes() -> None:
    got: list[Event] = []
    handlers = Registry()
    handlers.register(got.append, "x")
    listener = Listener(["x"], registry=handlers, durable=False, max_events=1)
    started = time.monotonic()
    running = ListenerThread(listener).wait_connected()
    # Several keepalive intervals pass: probes go out and come back.
    wait_until(lambda: listener._probe.answered_at > started + 0.6, 5, "probe answers")
    notify("x", "only")
    assert running.result(10) == 1
    assert [event.payload for event in got] == ["only"]


def test_probe_state() -> None:
    probe = Probe(timeout=10.0)
    assert probe.start(42) == "django_pgpubsub.listener.liveness.42"
    assert not probe.waiting
    probe.sent()
    assert probe.waiting
    probe.check()  # not yet overdue
    others = probe.receive(
        [Event("a", "", 1), Event("django_pgpubsub.listener.liveness.42", "", 42)]
    )
    assert [event.channel for event in others] == ["a"]
    assert not probe.waiting


def test_presence_keys_are_stable_signed_64_bit() -> None:
    key = presence_key("orders")
    assert key == presence_key("orders") != presence_key("Orders")
    assert -(2**63) <= key < 2**63
    classid, objid = presence_lock_ids("orders")
    assert (classid << 32 | objid) == key % 2**64


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@override_settings(PGPUBSUB={"KEEPALIVE_INTERVAL": KEEPALIVE, "RECONNECT_INITIAL_DELAY": 0.01})
def test_behind_a_pooler_that_loses_notifications(caplog: pytest.LogCaptureFixture) -> None:
    """Through a proxy that drops notifications, as a transaction pooler does,
    the listener's queries work but its probe never comes back: it reconnects
    within two keepalive intervals, and events flow once the path delivers."""
    caplog.set_level(logging.WARNING, "django_pgpubsub")
    # In front of the server itself, not of a pooler that DATABASE may go through.
    default = connections[conf.listener_database()].settings_dict
    proxy = NotificationDroppingProxy(default["HOST"], int(default["PORT"]))
    connections.settings["pooled"] = {
        **default,
        "HOST": "127.0.0.1",
        "PORT": str(proxy.port),
        "OPTIONS": {"sslmode": "disable", "gssencmode": "disable"},
    }
    got: list[str] = []
    connects: list[float] = []
    handlers = Registry()
    handlers.register(lambda event: got.append(event.payload), "x")
    listener = Listener(
        ["x"],
        using="pooled",
        registry=handlers,
        durable=False,
        on_connect=lambda _listener, _again: connects.append(time.monotonic()),
    )
    try:
        with ListenerThread(listener).wait_connected():
            notify("x", "lost")
            wait_until(lambda: len(connects) == 2, 4 * KEEPALIVE, "a reconnect")
            assert connects[1] - connects[0] <= 2 * KEEPALIVE
            assert proxy.dropped >= 2  # "lost" and the first probe's answer
            proxy.drop = False  # the listener now reaches a path that delivers
            notify("x", "delivered")
            wait_until(lambda: "delivered" in got, 4 * KEEPALIVE, "an event through the proxy")
    finally:
        proxy.close()
        del connections.settings["pooled"]
    assert got == ["delivered"]
    lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Lost")]
    assert lost
    assert "self-probe" in lost[0]
