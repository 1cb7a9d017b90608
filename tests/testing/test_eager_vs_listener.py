"""Eager mode runs durable events through production's cycle: one scenario,
run once under ``eager()`` and once by a listener, leaves the same outbox rows
and the same handler calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.test import override_settings

from django_pgpubsub import DurableEvent, Event, Registry, notify
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.testing import eager
from tests.helpers import ListenerThread, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Retries come due at once in eager mode; a listener waits for them.
QUICK_RETRIES = {
    "DURABLE_MAX_ATTEMPTS": 3,
    "DURABLE_RETRY_DELAY": 0.01,
    "DURABLE_POLL_INTERVAL": 0.1,
}


@dataclass
class Scenario:
    """Events stored in one transaction and handlers that do things to them."""

    store: Callable[[], None]
    handle: Callable[[DurableEvent], None]
    calls: list[tuple[str, int]] = field(default_factory=list)

    def registry(self) -> Registry:
        registry = Registry()

        def record_and_handle(event: Event) -> None:
            assert isinstance(event, DurableEvent)
            self.calls.append((event.payload, event.attempt))
            self.handle(event)

        registry.register(record_and_handle, "jobs")
        return registry


def rows() -> list[tuple[Any, ...]]:
    """The outbox as a listener leaves it, but for times and tokens; a failed
    attempt's error by its last line (the exception), since the stacks differ."""
    return [
        (
            row.channel,
            row.payload,
            row.state,
            row.attempts,
            row.key,
            row.ordering_key,
            row.last_error.strip().splitlines()[-1] if row.last_error else "",
        )
        for row in OutboxEvent.objects.order_by("id")
    ]


def users() -> list[str]:
    return sorted(User.objects.values_list("username", flat=True))


def raises(event: DurableEvent) -> None:
    User.objects.create(username=f"{event.payload}-{event.attempt}")
    if event.payload == "bad":
        raise RuntimeError("bad fails")


def marks_rollback(event: DurableEvent) -> None:
    User.objects.create(username=event.payload)
    if event.payload == "bad":
        transaction.set_rollback(True)


def catches_a_database_error(event: DurableEvent) -> None:
    User.objects.create(username=event.payload)
    if event.payload == "bad":
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1/0")
        except DatabaseError:
            pass  # the transaction is aborted all the same


def flaky(event: DurableEvent) -> None:
    if event.attempt < 3:
        raise RuntimeError(f"attempt {event.attempt} fails")
    User.objects.create(username=event.payload)


def keyed_fails(event: DurableEvent) -> None:
    if event.payload == "k1":
        raise RuntimeError("k1 fails")


def store(*payloads: str, **options: Any) -> Callable[[], None]:
    def stored() -> None:
        with transaction.atomic():
            for payload in payloads:
                notify("jobs", payload, durable=True, **options)

    return stored


def store_keyed(*items: tuple[str, str]) -> Callable[[], None]:
    def stored() -> None:
        with transaction.atomic():
            for payload, key in items:
                notify("jobs", payload, durable=True, ordering_key=key)

    return stored


def store_behind_another_channel() -> None:
    """b1 of key b waits behind an event of its key on a channel nobody handles."""
    notify("nobody", "b0", durable=True, ordering_key="b")
    with transaction.atomic():
        notify("jobs", "b1", durable=True, ordering_key="b")
        notify("jobs", "free", durable=True)


def store_with_idempotency_keys() -> None:
    with transaction.atomic():
        assert notify("jobs", "first", durable=True, key="once") is True
        assert notify("jobs", "second", durable=True, key="once") is False
        notify("jobs", "other", durable=True, key="other")


SCENARIOS: dict[str, tuple[Callable[[], Scenario], dict[str, Any]]] = {
    "a handler raises": (lambda: Scenario(store("ok", "bad"), raises), {}),
    "set_rollback": (lambda: Scenario(store("ok", "bad", "after"), marks_rollback), {}),
    "a caught database error": (
        lambda: Scenario(store("ok", "bad", "after"), catches_a_database_error),
        {},
    ),
    "retries until it succeeds": (lambda: Scenario(store("flaky"), flaky), {}),
    "idempotency keys": (lambda: Scenario(store_with_idempotency_keys, raises), {}),
    "ordering keys, continue": (
        lambda: Scenario(store_keyed(("k1", "k"), ("k2", "k"), ("j1", "j")), keyed_fails),
        {},
    ),
    "ordering keys, block": (
        lambda: Scenario(store_keyed(("k1", "k"), ("k2", "k"), ("j1", "j")), keyed_fails),
        {"ORDERING_ON_DEAD_LETTER": "block"},
    ),
    "behind its key's head": (lambda: Scenario(store_behind_another_channel, raises), {}),
}


def settled(expected: list[tuple[Any, ...]]) -> Callable[[], bool]:
    return lambda: rows() == expected


@pytest.mark.parametrize("name", SCENARIOS)
def test_eager_mode_and_a_listener_leave_the_same_outbox(
    name: str, running_listener: Callable[..., ListenerThread]
) -> None:
    make, settings = SCENARIOS[name]
    with override_settings(PGPUBSUB={**QUICK_RETRIES, **settings}):
        scenario = make()
        with eager(scenario.registry(), propagate=False):
            scenario.store()
        eager_rows, eager_users, eager_calls = rows(), users(), scenario.calls

        OutboxEvent.objects.all().delete()
        User.objects.all().delete()
        scenario = make()
        running = running_listener(["jobs"], registry=scenario.registry())
        scenario.store()
        wait_until(
            lambda: rows() == eager_rows and len(scenario.calls) >= len(eager_calls),
            20,
            f"the listener's outbox {rows()} to be eager mode's {eager_rows}",
        )
        running.stop()
        # The same calls; between keys, a listener's order follows its retry times.
        assert (rows(), users(), sorted(scenario.calls)) == (
            eager_rows,
            eager_users,
            sorted(eager_calls),
        )
    # What each scenario is about holds, too (both ways, as they are equal).
    failed = [row for row in eager_rows if row[2] == "failed"]
    if name in ("set_rollback", "a caught database error"):
        assert [row[1] for row in failed] == ["bad"]
        assert "marked for rollback" in failed[0][-1]
        assert eager_users == ["after", "ok"]
    if name == "ordering keys, block":
        assert [row[1:3] for row in eager_rows] == [("k1", "failed"), ("k2", "pending")]
    if name == "behind its key's head":
        assert [row[1:3] for row in eager_rows] == [("b0", "pending"), ("b1", "pending")]
