"""The Channels layer's expiry, its clean-up of stored messages and its log of dropped ones."""

from __future__ import annotations

import time

from asgiref.sync import async_to_sync
from django.db import connection, transaction

from django_pgpubsub.layers import PubSubChannelLayer
from tests.channel_layer.test_layer import LAYER_TESTS, eventually, receive, run

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
