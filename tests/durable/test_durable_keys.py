"""Idempotency keys, writers of the base columns, and the visibility of
running events (durable_events, admin); real PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client

from django_pgpubsub import (
    InvalidPayload,
    PubSub,
    Registry,
    notify,
    notify_many,
)
from django_pgpubsub.db.claim_sql import CLAIM_SQL
from django_pgpubsub.db.sql import WAKEUP_CHANNEL
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from tests.helpers import collect, nothing_arrives

pytestmark = pytest.mark.django_db(transaction=True)


def handle(channel: str, count: int) -> list[str]:
    seen: list[str] = []
    registry = Registry()
    registry.register(lambda event: seen.append(event.payload), channel)
    Listener([channel], registry=registry, max_events=count).run()
    return seen


def test_one_key_stores_one_waiting_event_and_is_free_again_once_handled(
    pubsub: PubSub,
) -> None:
    pubsub.listen(WAKEUP_CHANNEL)
    assert notify("mail", "first", durable=True, key="order-42") is True
    assert collect(pubsub, 1)[0].payload == "mail"
    assert notify("mail", "second", durable=True, key="order-42") is False
    assert nothing_arrives(pubsub)  # nothing stored, nobody woken
    assert notify("mail", "no key", durable=True) is True
    assert list(OutboxEvent.objects.order_by("id").values_list("payload", "key")) == [
        ("first", "order-42"),
        ("no key", None),
    ]
    assert handle("mail", 2) == ["first", "no key"]
    assert notify("mail", "third", durable=True, key="order-42") is True


def test_notify_many_with_keys_counts_what_it_stored() -> None:
    notify("mail", "waiting", durable=True, key="a")
    items: list[Any] = [
        ("mail", "dup of a waiting key", "a"),
        ("mail", "new key", "b"),
        ("mail", "same key twice in one call", "b"),
        ("mail", "no key", None),
        ("mail", "a pair"),
    ]
    with transaction.atomic():
        assert notify_many(items, durable=True) == 3
    assert list(OutboxEvent.objects.order_by("id").values_list("payload", flat=True)) == [
        "waiting",
        "new key",
        "no key",
        "a pair",
    ]


def test_keys_are_checked_before_anything_is_sent() -> None:
    with pytest.raises(InvalidPayload, match="durable=True"):
        notify("mail", "x", key="k")
    with pytest.raises(InvalidPayload, match="idempotency key"):
        notify("mail", "x", durable=True, key="")
    with pytest.raises(InvalidPayload, match="durable=True"):
        notify_many([("mail", "x", "k")])
    assert not OutboxEvent.objects.exists()


def test_a_failed_event_keeps_no_key_busy_and_is_not_retried_over_a_waiting_one() -> None:
    notify("mail", "failed", durable=True, key="k")
    OutboxEvent.objects.update(state="failed")
    assert notify("mail", "waiting", durable=True, key="k") is True
    assert OutboxEvent.objects.filter(state="failed").retry() == 0
    assert OutboxEvent.objects.get(payload="failed").state == "failed"


OLD_COLUMNS = "channel, payload, sender_pid, state, attempts, created_at, available_at, last_error"


def test_a_writer_that_names_only_the_base_columns_still_stores_events() -> None:
    """The triggers of publish_changes, frozen into migrations, name these
    columns alone: every other column has a default or is nullable."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO django_pgpubsub_outbox ({OLD_COLUMNS}) "
            "VALUES ('old', 'base columns', 1, 'pending', 0, now(), now(), '')"
        )
    assert handle("old", 1) == ["base columns"]


def claim(channel: str) -> int:
    """Claim ``channel``'s events as a listener would; return the claiming
    backend's pid (read in the claim's transaction: behind a transaction
    pooler, the driver's pid is the pooler's and the next transaction may run
    on another server connection)."""
    with transaction.atomic(), connection.cursor() as cursor:
        params = {
            "channels": [channel],
            "limit": 10,
            "token": str(uuid.uuid4()),
            "lease": 60.0,
            "holder": None,
            "blocking": ["pending", "running"],
            "only": None,
        }
        cursor.execute(CLAIM_SQL, params)
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def test_durable_events_shows_and_releases_running_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    notify("mail", "stuck", durable=True)
    notify("mail", "also stuck", durable=True)
    notify("sms", "waiting", durable=True)
    pid = claim("mail")
    call_command("durable_events", "status")
    out = capsys.readouterr().out
    assert "mail     running  2" in out
    [first, second] = OutboxEvent.objects.filter(channel="mail").order_by("id")
    assert f"#{first.pk} mail attempt 1: pid {pid}, since " in out
    assert f"#{second.pk} mail attempt 0: pid {pid}, since " in out
    assert "lease expires " in out

    with pytest.raises(CommandError, match="--id or --channel"):
        call_command("durable_events", "release")
    call_command("durable_events", "release", "--id", str(first.pk))
    assert "1 running event(s) released." in capsys.readouterr().out
    first.refresh_from_db()
    assert (first.state, first.attempts, first.claimed_pid) == ("pending", 1, None)
    call_command("durable_events", "release", "--channel", "mail")
    assert "1 running event(s) released." in capsys.readouterr().out
    assert set(OutboxEvent.objects.values_list("state", flat=True)) == {"pending"}


def test_admin_shows_who_holds_a_running_event_and_releases_it() -> None:
    notify("mail", "stuck", durable=True)
    claim("mail")
    row = OutboxEvent.objects.get()
    admin = User.objects.create_superuser("admin", "a@example.com", "pw")
    client = Client()
    client.force_login(admin)
    url = "/admin/django_pgpubsub/outboxevent/"
    page = client.get(url).content.decode()
    assert f"pid {row.claimed_pid}" in page
    assert "running" in page
    response = client.post(url, {"action": "release", "_selected_action": [row.pk]})
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.state, row.claimed_pid) == ("pending", None)
