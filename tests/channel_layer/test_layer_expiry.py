"""The Channels layer's expiry, its clean-up of stored messages and its log of dropped ones."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.utils import timezone

from django_pgpubsub.channel_layer import maintenance, messages
from django_pgpubsub.channel_layer.drops import DROPS, Drops
from django_pgpubsub.hub.hub import get_hub
from django_pgpubsub.layers import PubSubChannelLayer
from django_pgpubsub.models import LayerMessage
from tests.channel_layer.test_layer import LAYER_TESTS, eventually, receive, run
from tests.helpers import wait_until

pytestmark = LAYER_TESTS

BIG = "x" * 9000  # past NOTIFY's limit: a stored row


def wait_until_transaction_is_older_than(seconds: float) -> None:
    """Wait, inside the caller's transaction, until PostgreSQL's now() is
    ``seconds`` behind clock_timestamp()."""
    with connection.cursor() as cursor:
        for _ in range(1000):
            cursor.execute("SELECT extract(epoch FROM clock_timestamp() - now()) > %s", [seconds])
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("the transaction did not age")


def test_a_stored_message_sent_late_in_a_long_transaction_arrives() -> None:
    layer, sender = PubSubChannelLayer(expiry=0.5), PubSubChannelLayer(expiry=0.5)
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("room", channel)
    with transaction.atomic():
        wait_until_transaction_is_older_than(0.6)  # older than the expiry
        async_to_sync(sender.group_send)("room", {"type": "late", "text": BIG})
        async_to_sync(sender.send)(channel, {"type": "late too", "text": BIG})
    got = async_to_sync(receive)(layer, channel)
    assert got["type"] == "late"
    assert async_to_sync(receive)(layer, channel)["type"] == "late too"


def test_a_group_message_expires_for_each_member_from_its_own_send() -> None:
    async def scenario() -> None:
        layer, sender = PubSubChannelLayer(expiry=1), PubSubChannelLayer(expiry=1)
        first, second = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("room", first)
        await layer.group_add("room", second)
        await sender.send(first, {"type": "direct"})
        queue = layer._inbox.channels[first]
        await eventually(lambda: bool(queue.messages), "the direct message")
        deadline = queue.messages[0][0]
        await eventually(lambda: time.monotonic() > deadline - 0.5, "half the expiry")
        for n in range(3):
            await sender.group_send("room", {"type": "group", "n": n})
        await eventually(lambda: len(layer._inbox.channels[second].messages) == 3, "arrivals")
        await eventually(lambda: time.monotonic() > deadline, "the direct message's expiry")
        assert [(await receive(layer, first))["n"] for _ in range(3)] == [0, 1, 2]
        assert (await receive(layer, second))["n"] == 0

    run(scenario)


def expired_rows(count: int) -> None:
    past = timezone.now() - timedelta(seconds=1)
    LayerMessage.objects.bulk_create(LayerMessage(body="[]", expires_at=past) for _ in range(count))


def test_the_sweep_removes_expired_rows_in_bounded_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expired_rows(250)
    alive = LayerMessage.objects.create(body="[]", expires_at=timezone.now() + timedelta(hours=1))
    monkeypatch.setattr(maintenance, "BATCH", 100)
    monkeypatch.setattr(maintenance, "BATCHES", 2)
    assert run(lambda: maintenance.sweep(get_hub())) == 200
    assert run(lambda: maintenance.sweep(get_hub())) == 50
    assert list(LayerMessage.objects.all()) == [alive]


def test_a_listening_layer_removes_expired_rows_while_nothing_is_sent() -> None:
    expired_rows(30)

    async def scenario() -> None:
        layer = PubSubChannelLayer(expiry=1)  # a run every second
        await layer.new_channel()
        for _ in range(1000):
            [(count,)] = await get_hub().execute(f"SELECT count(*) FROM {messages.TABLE}")
            if count == 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the expired rows are still there")

    run(scenario)


def test_drops_for_a_full_channel_are_logged_as_one_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer(capacity=1)
        full = await layer.new_channel()
        await layer.group_add("room", full)
        await layer.send(full, {"type": "fills it"})
        await eventually(lambda: layer._inbox.full(full), "the arrival")
        for _ in range(300):
            await layer.group_send("room", {"type": "dropped"})

    with caplog.at_level(logging.WARNING, "django_pgpubsub.layers"):
        run(scenario)
        assert len(caplog.records) == 1
        assert "is full: a message to it was dropped" in caplog.records[0].getMessage()
        DROPS.flush(force=True)
    assert len(caplog.records) == 2
    assert "299 messages to it were dropped" in caplog.records[1].getMessage()


def test_the_periodic_flush_writes_the_count_once_the_interval_has_passed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drops = Drops(interval=0.05)
    with caplog.at_level(logging.WARNING, "django_pgpubsub.layers"):
        drops.dropped(["slow"] * 3)
        drops.flush()  # within the interval: nothing yet
        assert len(caplog.records) == 1
        logged = time.monotonic()
        wait_until(lambda: time.monotonic() - logged > 0.05, 5, "the interval")
        drops.flush()
        logged = time.monotonic()
        wait_until(lambda: time.monotonic() - logged > 0.05, 5, "the interval")
        drops.flush()  # nothing new: no line, and the quiet channel is forgotten
    assert [record.getMessage() for record in caplog.records][1:] == [
        "Channel 'slow' is full: 2 messages to it were dropped in the last 0 s."
    ]
    assert drops._logged == {}
