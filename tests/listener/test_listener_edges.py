"""The listener at the edges: signals, worker threads, and notifications
received just before the connection broke."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest
from django.core.management import call_command
from django.db import connection, connections

from django_pgpubsub import Event, Registry, notify, notify_many
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.listener.shutdown import stop_on_signals
from tests.helpers import ListenerThread, in_socket, wait_until
from tests.testapp.models import Received

pytestmark = pytest.mark.django_db(transaction=True)


class FailingLog(logging.Handler):
    """A log handler that raises, as a write to a closed stderr would."""

    def handle(self, record: logging.LogRecord) -> bool:
        raise OSError("stderr is gone")


def test_the_signal_handler_stops_the_listener_before_it_logs() -> None:
    listener = Listener(["x"], registry=Registry(), durable=False)
    logger = logging.getLogger("django_pgpubsub.listener")
    failing = FailingLog()
    logger.addHandler(failing)
    try:
        with stop_on_signals(listener), pytest.raises(OSError, match="stderr is gone"):
            os.kill(os.getpid(), signal.SIGTERM)
            # The handler runs here, between two bytecodes of this thread.
            for _ in range(1000):
                pass
    finally:
        logger.removeHandler(failing)
    assert listener.stopping


def test_listen_events_runs_in_a_worker_thread_without_signal_handlers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call_command("listen_events", "--channel", "test.a", "--max-events", "1")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: "Listening on" in capsys.readouterr().out, what="the listener")
    notify("test.a", "from the main thread")
    thread.join(20)
    assert not thread.is_alive()
    assert errors == []
    assert signal.getsignal(signal.SIGTERM) is before
    assert list(Received.objects.values_list("payload", flat=True)) == ["from the main thread"]


def test_notifications_received_before_the_loss_are_all_handled() -> None:
    """Notifications waiting in the socket when the backend dies are handled,
    then the listener reconnects."""
    seen: list[str] = []
    started, release = threading.Event(), threading.Event()
    handlers = Registry()

    def handle(event: Event) -> None:
        if event.payload == "first":
            started.set()
            release.wait(20)  # the rest arrive, and the backend dies, meanwhile
        seen.append(event.payload)

    handlers.register(handle, "lost")
    connects: list[bool] = []
    listener = Listener(
        ["lost"],
        registry=handlers,
        durable=False,
        on_connect=lambda _listener, again: connects.append(again),
    )
    with ListenerThread(listener):
        try:
            wait_until(lambda: connects == [False], what="the listener")
            notify("lost", "first")
            assert started.wait(10)
            notify_many(("lost", f"lost-{i}") for i in range(5))
            listening = listener.connection
            assert listening is not None
            wait_until(lambda: in_socket(listening, b"lost-4"), what="the notifications")
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [listening.pid])
            release.set()
            wait_until(lambda: connects == [False, True], what="the reconnect")
            wait_until(lambda: len(seen) == 6, what="every notification")
        finally:
            release.set()
    assert seen == ["first"] + [f"lost-{i}" for i in range(5)]
