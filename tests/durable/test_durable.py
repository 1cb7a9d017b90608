"""Durable events: outbox, SKIP LOCKED claims, retries, dead letters; real PostgreSQL."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client, override_settings
from django.utils import timezone

from django_pgpubsub import (
    DurableEvent,
    Event,
    InvalidChannel,
    PayloadTooLarge,
    PubSub,
    Registry,
    notify,
    notify_many,
)
from django_pgpubsub.db.sql import WAKEUP_CHANNEL
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ListenerThread, ManagePy, collect, run_listener, wait_until
from tests.testapp.models import Received

pytestmark = pytest.mark.django_db(transaction=True)

Start = Callable[..., ManagePy]


def test_stored_in_the_callers_transaction_and_wakes_listeners(pubsub: PubSub) -> None:
    pubsub.listen(WAKEUP_CHANNEL)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        notify("test.durable", "rolled back", durable=True)
        assert OutboxEvent.objects.count() == 1
        1 / 0  # noqa: B018
    assert OutboxEvent.objects.count() == 0
    with transaction.atomic():
        notify("test.durable", {"n": 1}, durable=True)
        # The sender's server backend; behind a transaction pooler, only the
        # same transaction is sure to be on it (the driver's pid is the pooler's).
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            [sender_pid] = cursor.fetchone()
    [row] = OutboxEvent.objects.all()
    assert (row.channel, row.payload, row.state, row.attempts) == (
        "test.durable",
        '{"n":1}',
        "pending",
        0,
    )
    assert row.sender_pid == sender_pid
    [wakeup] = collect(pubsub, 1)
    assert wakeup.payload == "test.durable"


def test_durable_payloads_have_no_size_limit_but_channels_are_checked() -> None:
    notify("test.durable", "x" * 100_000, durable=True)
    assert len(OutboxEvent.objects.get().payload) == 100_000
    with pytest.raises(InvalidChannel):
        notify("x" * 64, "y", durable=True)
    with pytest.raises(PayloadTooLarge):
        notify("test.durable", "x" * 8000)  # plain events keep the limit


def test_notify_many_durable_stores_every_item_in_order() -> None:
    items = [("test.durable", {"i": i}) for i in range(1000)] + [("test.a", "same")] * 2
    assert notify_many(items, durable=True) == 1002
    rows = list(OutboxEvent.objects.order_by("id").values_list("channel", "payload"))
    assert rows[:3] == [
        ("test.durable", '{"i":0}'),
        ("test.durable", '{"i":1}'),
        ("test.durable", '{"i":2}'),
    ]
    assert rows[-2:] == [("test.a", "same"), ("test.a", "same")]  # no de-duplication


@pytest.fixture
def seen() -> list[Any]:
    return []


@pytest.fixture
def handlers(seen: list[Any]) -> Registry:
    registry = Registry()

    def remember(event: Event) -> None:
        if not isinstance(event, DurableEvent):
            seen.append((event.channel, event.payload, 0))
            return
        seen.append((event.channel, event.payload, event.attempt))
        User.objects.create(username=f"user-{event.id}")  # committed with completion

    def flaky(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        User.objects.create(username=f"rolled-back-{event.id}")
        raise RuntimeError(f"cannot handle {event.payload}")

    registry.register(remember, "jobs")
    registry.register(flaky, "flaky")
    return registry


def test_committed_while_no_listener_runs_handled_at_start(
    handlers: Registry, seen: list[Any]
) -> None:
    notify("jobs", "big " + "x" * 20_000, durable=True)
    notify("jobs", "second", durable=True)
    assert run_listener(handlers, channels=["jobs"], max_events=2) == 2
    assert seen == [("jobs", "big " + "x" * 20_000, 1), ("jobs", "second", 1)]
    assert OutboxEvent.objects.count() == 0
    assert User.objects.count() == 2


def test_woken_while_running(handlers: Registry, seen: list[Any]) -> None:
    def send_after_connecting(listener: Listener, reconnected: bool) -> None:
        notify_many([("jobs", "a"), ("jobs", "b")], durable=True)

    dispatched = run_listener(
        handlers, channels=["jobs"], max_events=2, on_connect=send_after_connecting
    )
    assert dispatched == 2
    assert [payload for _, payload, _ in seen] == ["a", "b"]


def test_failures_retry_with_backoff_then_stay_failed_without_blocking_others(
    handlers: Registry, seen: list[Any]
) -> None:
    notify("flaky", "boom", durable=True)
    notify("jobs", "fine", durable=True)
    # DURABLE_MAX_ATTEMPTS is 3 in the test settings: 3 flaky attempts + 1 job.
    assert run_listener(handlers, channels=["jobs", "flaky"], max_events=4) == 4
    assert seen == [("jobs", "fine", 1)]
    failed = OutboxEvent.objects.get()
    assert (failed.channel, failed.state, failed.attempts) == ("flaky", "failed", 3)
    assert "RuntimeError: cannot handle boom" in failed.last_error
    assert failed.available_at > failed.created_at  # backed off
    # The failing handler's write was rolled back each time; the good one's kept.
    assert list(User.objects.values_list("username", flat=True)) == [f"user-{failed.pk + 1}"]


def test_max_events_counts_plain_and_durable_events(handlers: Registry, seen: list[Any]) -> None:
    def send(listener: Listener, reconnected: bool) -> None:
        notify("jobs", "plain")
        notify("jobs", "durable", durable=True)

    assert run_listener(handlers, channels=["jobs"], max_events=2, on_connect=send) == 2
    assert sorted(seen) == [("jobs", "durable", 1), ("jobs", "plain", 0)]


def test_durable_false_ignores_the_outbox(handlers: Registry, seen: list[Any]) -> None:
    notify("jobs", "stays", durable=True)

    def send(listener: Listener, reconnected: bool) -> None:
        notify("jobs", "plain")

    run_listener(handlers, channels=["jobs"], max_events=1, on_connect=send, durable=False)
    assert seen == [("jobs", "plain", 0)]
    assert OutboxEvent.objects.count() == 1


@pytest.fixture
def listen_durable(listen_events: Start) -> Start:
    return lambda *args: listen_events("--channel", "test.durable", *args)


@pytest.mark.slow
@pytest.mark.scale
def test_three_processes_share_twenty_thousand_events_each_handled_once(
    listen_durable: Start,
) -> None:
    processes = [listen_durable() for _ in range(3)]
    with transaction.atomic():
        notify_many((("test.durable", str(i)) for i in range(20_000)), durable=True)
    wait_until(lambda: Received.objects.count() >= 20_000, 300, "20,000 handled events")
    wait_until(lambda: not OutboxEvent.objects.exists(), 30, "an empty outbox")
    payloads = list(Received.objects.values_list("payload", flat=True))
    assert len(payloads) == 20_000
    assert sorted(map(int, payloads)) == list(range(20_000))
    handled_by = set(Received.objects.values_list("pid", flat=True))
    assert handled_by <= {p.process.pid for p in processes}
    assert len(handled_by) >= 2, "the work was not shared"


@pytest.mark.slow
def test_an_event_whose_listener_is_killed_is_handled_by_another(
    listen_events: Start, tmp_path: Path
) -> None:
    marker = tmp_path / "first-attempt"
    first = listen_events("--channel", "test.durable.kill")
    notify("test.durable.kill", {"marker": str(marker)}, durable=True)
    wait_until(marker.exists, 30, "the first attempt")
    first.signal(signal.SIGKILL)
    first.wait()
    assert not Received.objects.exists()

    second = listen_events("--channel", "test.durable.kill")
    wait_until(Received.objects.exists, 30, "the second listener to handle it")
    [row] = Received.objects.all()
    assert (row.handler, row.pid) == ("durable after kill", second.process.pid)
    wait_until(lambda: not OutboxEvent.objects.exists(), 10, "an empty outbox")


def make_failed(channel: str, count: int) -> None:
    for _ in range(count):
        notify(channel, "x", durable=True)
    OutboxEvent.objects.filter(channel=channel).update(state="failed", attempts=3)


def test_durable_events_command_status_retry_purge(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("durable_events")
    assert "No durable events are waiting or failed." in capsys.readouterr().out

    make_failed("orders", 2)
    make_failed("mail", 1)
    notify("mail", "waiting", durable=True)
    call_command("durable_events", "status")
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == ["mail     failed   1", "mail     pending  1", "orders   failed   2"]

    call_command("durable_events", "retry", "--channel", "orders")
    assert "2 failed event(s) will be retried." in capsys.readouterr().out
    assert OutboxEvent.objects.filter(channel="orders", state="pending", attempts=0).count() == 2

    call_command("durable_events", "purge", "--older-than", "1h")
    assert "Deleted 0 failed event(s)." in capsys.readouterr().out
    OutboxEvent.objects.filter(channel="mail").update(
        created_at=OutboxEvent.objects.get(payload="waiting").created_at.replace(year=2000)
    )
    call_command("durable_events", "purge", "--older-than", "7d")
    assert "Deleted 1 failed event(s)." in capsys.readouterr().out
    assert OutboxEvent.objects.filter(channel="mail").get().state == "pending"


def test_durable_events_command_rejects_a_bad_age() -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="not an age"):
        call_command("durable_events", "purge", "--older-than", "soon")


def test_admin_lists_read_only_and_retries(settings: Any) -> None:
    make_failed("orders", 1)
    admin = User.objects.create_superuser("admin", "a@example.com", "pw")
    client = Client()
    client.force_login(admin)
    url = "/admin/django_pgpubsub/outboxevent/"
    page = client.get(url)
    assert page.status_code == 200
    assert b"orders" in page.content
    assert client.get(url + "add/").status_code == 403
    row = OutboxEvent.objects.get()
    response = client.post(url, {"action": "retry", "_selected_action": [row.pk]})
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("pending", 0)


def test_running_events_are_released_never_deleted_by_the_tools() -> None:
    """Deleting a running keyed row would let its key's next event start
    beside it: neither purge nor the admin deletes one."""
    notify("orders", "running", durable=True, ordering_key="k")
    OutboxEvent.objects.update(
        state="running", claim_token=uuid.uuid4(), created_at=timezone.now().replace(year=2000)
    )
    call_command("durable_events", "purge", "--older-than", "1s", stdout=StringIO())
    assert OutboxEvent.objects.get().state == "running"
    admin = User.objects.create_superuser("admin", "a@example.com", "pw")
    client = Client()
    client.force_login(admin)
    url = "/admin/django_pgpubsub/outboxevent/"
    row = OutboxEvent.objects.get()
    assert client.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    response = client.post(url, {"action": "delete_selected", "_selected_action": [row.pk]})
    assert OutboxEvent.objects.get().state == "running"
    assert response.status_code in (200, 302)
    client.post(url, {"action": "release", "_selected_action": [row.pk]})
    assert OutboxEvent.objects.get().state == "pending"


def test_swept_after_a_reconnect(handlers: Registry, seen: list[Any]) -> None:
    """An event whose wake-up the listener never hears is handled as soon as
    it reconnects, long before the next poll."""
    rare = {"KEEPALIVE_INTERVAL": 60, "DURABLE_POLL_INTERVAL": 60}
    reconnections: list[bool] = []

    def on_connect(listener: Listener, reconnected: bool) -> None:
        reconnections.append(reconnected)

    with override_settings(PGPUBSUB=rare):
        listener = Listener(["jobs"], registry=handlers, max_events=2, on_connect=on_connect)
        with ListenerThread(listener).wait_connected() as running:
            # The start-up sweep (of an empty outbox) comes before the first
            # plain event is handled, in the listener's thread.
            notify("jobs", "plain")
            wait_until(lambda: seen == [("jobs", "plain", 0)], what="the plain event")
            # A row with no wake-up at all (as if the wake-up had been missed).
            now = timezone.now()
            OutboxEvent.objects.create(
                channel="jobs", payload="wake-up never heard", sender_pid=0,
                created_at=now, available_at=now,
            )  # fmt: skip
            assert listener.connection is not None
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [listener.connection.pid])
            assert running.result(30) == 2
    assert seen == [("jobs", "plain", 0), ("jobs", "wake-up never heard", 1)]
    assert reconnections == [False, True]


def test_without_the_outbox_table_plain_events_still_flow(
    handlers: Registry, seen: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE django_pgpubsub_outbox RENAME TO outbox_away")
    try:

        def send(listener: Listener, reconnected: bool) -> None:
            notify("jobs", "plain")

        with caplog.at_level("WARNING", "django_pgpubsub"):
            run_listener(handlers, channels=["jobs"], max_events=1, on_connect=send)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE outbox_away RENAME TO django_pgpubsub_outbox")
    assert seen == [("jobs", "plain", 0)]
    assert "No outbox table on 'default'" in caplog.text
    assert "manage.py migrate django_pgpubsub" in caplog.text


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_durable_events_command_on_another_database(capsys: pytest.CaptureFixture[str]) -> None:
    # Durable events are stored on the DATABASE setting's alias.
    with override_settings(PGPUBSUB={**settings.PGPUBSUB, "DATABASE": "other"}):
        notify("elsewhere", "x", durable=True)
    call_command("durable_events", "--database", "other", "status")
    assert "elsewhere  pending  1" in capsys.readouterr().out
    call_command("durable_events")
    assert "No durable events" in capsys.readouterr().out
