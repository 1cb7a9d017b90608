"""Handlers the listen_events tests run (found by autodiscovery)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.contrib.auth.models import Permission, User

from django_pgpubsub import (
    DurableEvent,
    Event,
    PubSub,
    connect,
    handler,
    notify,
    publish_changes,
    publish_on_save,
)
from tests.testapp.models import Received


def record(event: Event, name: str) -> None:
    Received.objects.create(
        channel=event.channel, payload=event.payload, handler=name, pid=os.getpid()
    )


@handler("test.a", "test.b", "test.burst")
def recorder(event: Event) -> None:
    record(event, "recorder")


@handler("test.b")
def second_for_b(event: Event) -> None:
    record(event, "second_for_b")


@handler("test.slow")
def slow(event: Event) -> None:
    record(event, "slow started")
    time.sleep(float(event.data["sleep"]))
    record(event, "slow finished")


@handler("test.fail")
def fails_on_boom(event: Event) -> None:
    if event.payload == "boom":
        raise RuntimeError("boom")
    record(event, "fails_on_boom")


@handler("test.fail")
def after_the_failing_one(event: Event) -> None:
    record(event, "after_the_failing_one")


@handler("test.echo")
def echo(event: Event) -> None:
    notify("test.a", f"echo:{event.payload}")


publish_on_save(User, fields=("username", "email"), events=("created", "deleted"))
# A model of another app: the triggers' migration lands in testapp (a proxy).
publish_changes(Permission, events=("created",))


@handler("testapp.order")
def order_changed(event: Event) -> None:
    record(event, f"order {event.data['event']}")


@handler("test.durable")
def durable_recorder(event: Event) -> None:
    record(event, "durable")


@handler("test.durable.kill")
def killed_the_first_time(event: Event) -> None:
    """The first attempt marks a file and hangs (to be killed); later ones record."""
    marker = Path(event.data["marker"])
    if not marker.exists():
        marker.touch()
        time.sleep(600)
    record(event, "durable after kill")


@handler("test.durable.crash")
def crashes_on_crash(event: Event) -> None:
    """Takes its whole process down, as an OOM kill or a segfault would."""
    if event.payload == "crash":
        os._exit(3)
    record(event, "durable crash test")


@handler("test.durable.crash_once")
def logs_then_crashes_once(event: Event) -> None:
    """Appends "pid id" to the file ``log`` at every call, then records; the event
    whose ``crash`` is true first takes its process down (once: ``marker``)."""
    assert isinstance(event, DurableEvent)
    data = event.data
    with open(data["log"], "a") as log:
        log.write(f"{os.getpid()} {event.id}\n")
    marker = Path(data["marker"])
    if data.get("crash") and not marker.exists():
        marker.touch()
        os._exit(3)
    record(event, "durable crash once")


@handler("test.durable.hang")
def hangs_the_first_time(event: Event) -> None:
    """The first attempt writes its process id to a file and hangs (to be killed)."""
    marker = Path(event.data["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(600)
    record(event, "durable after hang")


_side: list[PubSub] = []


def _log(statement: str, params: tuple[object, ...]) -> None:
    """Write on a connection of its own, in autocommit: a failed attempt's
    rollback keeps the record."""
    if not _side:
        _side.append(connect())
    with _side[0].conn.cursor() as cursor:
        cursor.execute(statement, params)


@handler("test.durable.ordered")
def ordered(event: Event) -> None:
    """Records its start and end (clock_timestamp()) in ordering_log; sleeps as
    told; fails the first attempt when told."""
    assert isinstance(event, DurableEvent)
    data = event.data
    _log(
        "INSERT INTO ordering_log (key, seq, attempt, pid, started) "
        "VALUES (%s, %s, %s, %s, clock_timestamp())",
        (data["key"], data["seq"], event.attempt, os.getpid()),
    )
    time.sleep(data["sleep"])
    failing = data.get("fail") and event.attempt == 1
    _log(
        "UPDATE ordering_log SET ended = clock_timestamp(), failed = %s "
        "WHERE key = %s AND seq = %s AND attempt = %s",
        (bool(failing), data["key"], data["seq"], event.attempt),
    )
    if failing:
        raise RuntimeError("fails its first attempt")
