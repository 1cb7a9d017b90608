"""The listener's periodic work: on time whatever the traffic, and any descriptor."""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from django_pgpubsub import Event, Registry, conf, connect, notify
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.listener.schedule import Schedule
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ListenerThread, wait_until


def test_schedule_runs_what_is_due_once_and_says_how_long_to_wait() -> None:
    schedule = Schedule()
    runs: list[str] = []
    fast = schedule.every("fast", 1.0, lambda: runs.append("fast"))
    slow = schedule.every("slow", 10.0, lambda: runs.append("slow"))
    start = fast.due - 1.0
    assert schedule.timeout(start) == pytest.approx(1.0)
    schedule.run_due(start + 0.5)
    assert runs == []
    schedule.run_due(start + 5.0)
    assert runs == ["fast"]
    assert fast.due == pytest.approx(start + 6.0)
    assert schedule.timeout(start + 5.0) == pytest.approx(1.0)
    schedule.run_due(slow.due)
    assert runs == ["fast", "fast", "slow"]


def test_a_task_that_raises_is_not_due_again_at_once() -> None:
    schedule = Schedule()

    def fail() -> None:
        raise ConnectionError("lost")

    task = schedule.every("fail", 2.0, fail)
    now = task.due
    with pytest.raises(ConnectionError):
        schedule.run_due(now)
    assert task.due == pytest.approx(now + 2.0)
    assert Schedule().timeout(now) is None


@pytest.mark.django_db(transaction=True)
def test_durable_sweep_runs_every_poll_interval_under_constant_plain_traffic() -> None:
    """Plain events every 0.1 s never let the loop go idle; a durable event
    whose wake-up was missed is still found within the poll interval."""
    handled: list[str] = []
    handlers = Registry()
    handlers.register(lambda event: handled.append(event.payload), "jobs")
    handlers.register(lambda event: None, "chatter")
    stop_chatter = threading.Event()

    def chatter() -> None:
        try:
            while not stop_chatter.wait(0.1):
                notify("chatter", "tick")
        finally:
            connections.close_all()

    with override_settings(PGPUBSUB={"KEEPALIVE_INTERVAL": 60, "DURABLE_POLL_INTERVAL": 0.5}):
        listener = Listener(["jobs", "chatter"], registry=handlers)
        sender = threading.Thread(target=chatter)
        try:
            with ListenerThread(listener).wait_connected():
                sender.start()
                wait_until(lambda: listener.dispatched >= 3, what="plain traffic flowing")
                now = timezone.now()
                # A row whose wake-up was never sent, as if it had been missed.
                OutboxEvent.objects.create(
                    channel="jobs", payload="found", sender_pid=0, created_at=now, available_at=now
                )
                wait_until(lambda: handled == ["found"], timeout=0.5 + 2, what="the periodic sweep")
        finally:
            stop_chatter.set()
            if sender.is_alive():
                sender.join(10)


@pytest.fixture
def descriptors_above_1024() -> Iterator[None]:
    """Occupy descriptors so that the next sockets get numbers above 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1400
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < 1100:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("descriptors_above_1024")
def test_pubsub_and_listener_work_with_descriptors_above_1024() -> None:
    with connect(conf.listener_database()) as pubsub:
        assert pubsub.fileno() >= 1024
        pubsub.listen("high")
        pubsub.notify("high", "1")
        event = next(pubsub.events(select_timeout=5))
        assert event.payload == "1"
        assert list(_first(pubsub.events(select_timeout=0.05, yield_timeouts=True))) == [None]

    received: list[Event] = []
    handlers = Registry()
    handlers.register(received.append, "high")
    listener = Listener(
        ["high"],
        registry=handlers,
        max_events=1,
        on_connect=lambda _listener, _again: notify("high", "2"),
    )
    assert listener.run() == 1
    assert [event.payload for event in received] == ["2"]


def _first(iterator: Iterator[Any]) -> Iterator[Any]:
    yield next(iterator)
