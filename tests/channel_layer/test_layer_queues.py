"""Normal channels (no ``!``) are queues: each message kept in PostgreSQL until one receiver,
in any process, takes it. Two layers stand for two processes (each has its own inbox)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from django.db import transaction

from django_pgpubsub.channel_layer import queues
from django_pgpubsub.layers import PubSubChannelLayer
from django_pgpubsub.models import LayerMessage
from tests.channel_layer.test_layer import LAYER_TESTS, receive, run

pytestmark = LAYER_TESTS


def queued() -> int:
    return int(LayerMessage.objects.filter(channel__isnull=False).count())


def test_a_message_sent_before_anyone_receives_is_kept_for_the_first_receiver() -> None:
    async def scenario() -> None:
        sender, worker = PubSubChannelLayer(), PubSubChannelLayer()
        await sender.send("thumbnails", {"type": "make", "n": 1})
        await sender.send("thumbnails", {"type": "make", "n": 2})
        assert await receive(worker, "thumbnails") == {"type": "make", "n": 1}
        assert await receive(worker, "thumbnails") == {"type": "make", "n": 2}

    run(scenario)
    assert queued() == 0


def test_receivers_of_two_processes_share_a_channel_each_message_taken_once() -> None:
    async def scenario() -> list[int]:
        sender = PubSubChannelLayer()
        workers = [PubSubChannelLayer(), PubSubChannelLayer()]
        taken: list[int] = []

        async def work(layer: PubSubChannelLayer) -> None:
            while True:
                message = await layer.receive("jobs")
                if message["type"] == "stop":
                    return
                taken.append(message["n"])

        loop = asyncio.get_running_loop()
        running = [loop.create_task(work(layer)) for layer in workers for _ in range(2)]
        for n in range(60):
            await sender.send("jobs", {"type": "job", "n": n})
        for _ in running:
            await sender.send("jobs", {"type": "stop"})
        await asyncio.wait_for(asyncio.gather(*running), 20)
        return taken

    taken = run(scenario)
    assert sorted(taken) == list(range(60))
    assert queued() == 0


def test_one_senders_messages_are_received_in_send_order() -> None:
    async def scenario() -> None:
        sender, worker = PubSubChannelLayer(), PubSubChannelLayer()
        waiting = asyncio.get_running_loop().create_task(worker.receive("ordered"))
        for n in range(20):
            await sender.send("ordered", {"type": "m", "n": n})
        got = [(await asyncio.wait_for(waiting, 10))["n"]]
        got += [(await receive(worker, "ordered"))["n"] for _ in range(19)]
        assert got == list(range(20))

    run(scenario)


def test_sends_in_a_transaction_are_kept_at_commit_and_dropped_at_rollback() -> None:
    sender, worker = PubSubChannelLayer(), PubSubChannelLayer()
    send = async_to_sync(sender.send)
    with transaction.atomic():
        send("tx", {"type": "committed"})
        assert queued() == 1  # in this transaction only
    with pytest.raises(RuntimeError), transaction.atomic():
        send("tx", {"type": "rolled back"})
        raise RuntimeError
    send("tx", {"type": "after"})
    assert async_to_sync(receive)(worker, "tx") == {"type": "committed"}
    assert async_to_sync(receive)(worker, "tx") == {"type": "after"}
    assert queued() == 0


def test_capacity_counts_a_channels_messages_in_every_process() -> None:
    async def scenario() -> None:
        one = PubSubChannelLayer(capacity=2)
        other = PubSubChannelLayer(channel_capacity={"small*": 2})
        await one.send("small.jobs", {"type": "m", "n": 0})
        await other.send("small.jobs", {"type": "m", "n": 1})
        with pytest.raises(ChannelFull):
            await one.send("small.jobs", {"type": "m", "n": 2})
        with pytest.raises(ChannelFull):
            await other.send("small.jobs", {"type": "m", "n": 2})
        assert (await receive(one, "small.jobs"))["n"] == 0
        await other.send("small.jobs", {"type": "m", "n": 3})  # room again
        assert [(await receive(other, "small.jobs"))["n"] for _ in range(2)] == [1, 3]

    run(scenario)


def test_a_full_channel_refuses_inside_a_transaction_that_stays_usable() -> None:
    layer = PubSubChannelLayer(capacity=1)
    send = async_to_sync(layer.send)
    send("busy", {"type": "fills it"})
    with transaction.atomic():
        with pytest.raises(ChannelFull):
            send("busy", {"type": "refused"})
        assert queued() == 1  # the transaction goes on
    assert async_to_sync(receive)(layer, "busy") == {"type": "fills it"}


def test_a_normal_channel_in_a_group_gets_the_groups_messages() -> None:
    async def scenario() -> None:
        layer, sender = PubSubChannelLayer(), PubSubChannelLayer()
        await layer.group_add("room", "mixed")
        await sender.group_send("room", {"type": "to the group"})
        assert await receive(layer, "mixed") == {"type": "to the group"}
        await sender.send("mixed", {"type": "to the channel"})
        assert await receive(layer, "mixed") == {"type": "to the channel"}

    run(scenario)


def test_an_expired_message_is_never_delivered() -> None:
    layer = PubSubChannelLayer()
    async_to_sync(layer.send)("expiring", {"type": "old"})
    LayerMessage.objects.update(
        expires_at=LayerMessage.objects.get().expires_at - timedelta(hours=1)
    )
    async_to_sync(layer.send)("expiring", {"type": "new"})
    assert async_to_sync(receive)(layer, "expiring") == {"type": "new"}


def test_a_claim_cancelled_midway_puts_its_message_back_for_the_next_receiver() -> None:
    async def scenario() -> None:
        sender, worker = PubSubChannelLayer(), PubSubChannelLayer()
        pg_name = worker._taps.pg_name("c", "precious")
        await worker._taps.listen("c", "precious")
        for attempt in range(20):
            await sender.send("precious", {"type": "m", "n": attempt})
            await sender.send("precious", {"type": "next"})
            claim = asyncio.get_running_loop().create_task(
                queues.claim(worker.hub, "precious", pg_name)
            )
            await asyncio.sleep(0)  # the claim starts on the hub's thread
            claim.cancel()
            with pytest.raises(asyncio.CancelledError):
                await claim
            # Taken or not when it was cancelled, the message is there for the next, in its place.
            assert await receive(worker, "precious") == {"type": "m", "n": attempt}
            assert await receive(worker, "precious") == {"type": "next"}

    run(scenario)


def test_a_receive_cancelled_mid_wait_loses_no_message() -> None:
    async def scenario() -> None:
        sender, worker = PubSubChannelLayer(), PubSubChannelLayer()
        for n in range(20):
            waiting = asyncio.get_running_loop().create_task(worker.receive("cancelled"))
            await sender.send("cancelled", {"type": "m", "n": n})
            await asyncio.sleep(0)
            waiting.cancel()
            results: list[Any] = await asyncio.gather(waiting, return_exceptions=True)
            if not isinstance(results[0], asyncio.CancelledError):
                assert results[0] == {"type": "m", "n": n}  # it won the race
                continue
            assert await receive(worker, "cancelled") == {"type": "m", "n": n}

    run(scenario)


def test_flush_empties_normal_channels() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        await layer.send("flushed", {"type": "gone"})
        await layer.flush()
        await layer.send("flushed", {"type": "kept"})
        assert await receive(layer, "flushed") == {"type": "kept"}

    run(scenario)
