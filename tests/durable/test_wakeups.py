"""Durable wake-ups coalesce: one per channel per transaction, however many events.

PostgreSQL folds the NOTIFYs of one transaction that have the same channel and
payload, and the wake-up's payload is the event's channel, so a transaction
that stores 1,000 events on one channel wakes listeners once. Counted on a raw
psycopg2 connection LISTENing on the wake-up channel.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from django.db import transaction

from django_pgpubsub import notify, notify_many
from django_pgpubsub.db.sql import WAKEUP_CHANNEL
from django_pgpubsub.models import OutboxEvent
from tests.helpers import run_sql

pytestmark = pytest.mark.django_db(transaction=True)

MARKER = "end of test"


@pytest.fixture
def wakeups(test_database_url: str) -> Iterator[Any]:
    """A raw connection LISTENing on the wake-up channel."""
    conn = psycopg2.connect(test_database_url)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'LISTEN "{WAKEUP_CHANNEL}"')
    yield conn
    conn.close()


def received(conn: Any, url: str) -> list[str]:
    """The wake-ups' payloads so far, in order.

    A marker sent on the wake-up channel after the transactions under test
    ends the wait: notifications arrive in commit order, so once it is here
    every wake-up committed before it is too.
    """
    run_sql(url, "SELECT pg_notify(%s, %s)", (WAKEUP_CHANNEL, MARKER))
    payloads: list[str] = []
    deadline = time.monotonic() + 10
    while MARKER not in payloads:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([conn], [], [], remaining)[0]:
            raise AssertionError(f"no marker within 10 s; received {payloads[:5]}")
        conn.poll()
        payloads.extend(notification.payload for notification in conn.notifies)
        conn.notifies.clear()
    assert payloads[-1] == MARKER
    return payloads[:-1]


def test_a_thousand_durable_notifies_in_one_transaction_wake_once(
    wakeups: Any, test_database_url: str
) -> None:
    with transaction.atomic():
        for i in range(1000):
            notify("test.coalesce", {"i": i}, durable=True)
    assert OutboxEvent.objects.filter(channel="test.coalesce").count() == 1000
    assert received(wakeups, test_database_url) == ["test.coalesce"]


def test_notify_many_durable_wakes_once_per_channel(wakeups: Any, test_database_url: str) -> None:
    items = [("test.coalesce", {"i": i}) for i in range(1000)]
    items += [("test.other", {"i": i}) for i in range(10)]
    with transaction.atomic():
        assert notify_many(items, durable=True) == 1010
        # The same channel again, through notify(): still the same wake-up.
        notify("test.coalesce", "one more", durable=True)
    assert OutboxEvent.objects.count() == 1011
    assert sorted(received(wakeups, test_database_url)) == ["test.coalesce", "test.other"]


def test_each_transaction_sends_its_own_wake_up(wakeups: Any, test_database_url: str) -> None:
    """What the two tests above count would see if wake-ups did not coalesce."""
    for i in range(3):
        with transaction.atomic():
            notify("test.coalesce", {"i": i}, durable=True)
    notify_many([("test.coalesce", "autocommit")], durable=True)
    assert received(wakeups, test_database_url) == ["test.coalesce"] * 4
