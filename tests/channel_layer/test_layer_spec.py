"""The Channels layer against the ground that channels' and channels_redis's
own layer tests cover: names, empty groups, concurrent receivers, receives
cancelled and resumed, per-channel capacities, messages that members change."""

from __future__ import annotations

import asyncio
import random

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull

from django_pgpubsub.hub.hub import get_hub
from django_pgpubsub.layers import PubSubChannelLayer
from tests.channel_layer.test_layer import LAYER_TESTS, eventually, receive, run

pytestmark = LAYER_TESTS


def waiters(layer: PubSubChannelLayer, channel: str) -> int:
    queue = layer._inbox.channels.get(channel)
    return 0 if queue is None else len(queue.waiters)


async def nothing_for(layer: PubSubChannelLayer, channel: str, marker: str) -> None:
    """Nothing reaches ``channel`` before ``marker``, sent now."""
    await layer.send(channel, {"type": marker})
    assert await receive(layer, channel) == {"type": marker}


def test_names_outside_the_spec_are_refused_everywhere() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        for bad in ("¯\\_(ツ)_/¯", "a" * 100, "spaces here", "", 42):
            with pytest.raises(TypeError):
                await layer.send(bad, {"type": "x"})  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await layer.receive(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await layer.group_add(bad, "ok")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await layer.group_discard("ok", bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await layer.group_send(bad, {"type": "x"})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await layer.new_channel("bad prefix")
        with pytest.raises(AssertionError):
            await layer.group_send("ok", "not a dict")  # type: ignore[arg-type]
        # The longest names the spec allows (99 characters) work.
        longest = await layer.new_channel("p" * 53)
        assert len(longest) == 99
        await layer.group_add("g" * 99, longest)
        await layer.group_send("g" * 99, {"type": "longest"})
        assert await receive(layer, longest) == {"type": "longest"}

    run(scenario)


def test_new_channel_names_stay_unique_when_the_random_seed_is_reset() -> None:
    async def scenario() -> None:
        random.seed(1)
        first = PubSubChannelLayer()
        a = await first.new_channel()
        random.seed(1)
        second = PubSubChannelLayer()
        b = await second.new_channel()
        assert first.process != second.process
        assert a != b
        assert a.startswith(f"specific.{first.process}!")

    run(scenario)


def test_a_specific_channel_of_another_process_is_neither_received_nor_grouped_here() -> None:
    async def scenario() -> None:
        here, elsewhere = PubSubChannelLayer(), PubSubChannelLayer()
        theirs = await elsewhere.new_channel()
        with pytest.raises(ValueError, match="another process"):
            await here.receive(theirs)
        with pytest.raises(ValueError, match="another process"):
            await here.receive("not-a-client-prefix!local")
        # Membership is process-local: their channel cannot join a group here.
        with pytest.raises(ValueError, match="add it to a group"):
            await here.group_add("room", theirs)
        assert here._inbox.groups == {}
        assert theirs not in here._inbox.channels
        await here.send(theirs, {"type": "reaches them"})  # sending is fine
        assert await receive(elsewhere, theirs) == {"type": "reaches them"}

    run(scenario)


def test_group_send_to_an_empty_or_emptied_group_delivers_nothing() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        await layer.group_send("nobody", {"type": "lost"})  # no error
        channel = await layer.new_channel()
        await layer.group_discard("nobody", channel)  # discard before any add
        await layer.group_add("room", channel)
        await layer.group_discard("room", channel)
        await layer.group_send("room", {"type": "lost too"})
        await layer.group_add("nobody", channel)  # after the send: nothing old
        await nothing_for(layer, channel, "marker")

    run(scenario)


def test_concurrent_receivers_on_one_channel_share_its_messages() -> None:
    async def scenario() -> None:
        layer, sender = PubSubChannelLayer(), PubSubChannelLayer()
        loop = asyncio.get_running_loop()
        receivers = [loop.create_task(layer.receive("jobs")) for _ in range(3)]
        await eventually(lambda: waiters(layer, "jobs") == 3, "the waits")
        # One of them leaves: the channel stays for the two others.
        receivers[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await receivers[0]
        assert "jobs" in layer._inbox.channels
        await sender.send("jobs", {"type": "job", "n": 1})
        await sender.send("jobs", {"type": "job", "n": 2})
        got = await asyncio.wait_for(asyncio.gather(*receivers[1:]), 10)
        assert sorted(message["n"] for message in got) == [1, 2]

    run(scenario)


def test_a_receive_cancelled_after_its_wake_up_passes_the_message_on() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        channel = await layer.new_channel()
        loop = asyncio.get_running_loop()
        first = loop.create_task(layer.receive(channel))
        second = loop.create_task(layer.receive(channel))
        await eventually(lambda: waiters(layer, channel) == 2, "the waits")
        # The message is handed to the first waiter, which is cancelled before it runs.
        layer._inbox.deliver([channel], {"type": "once"})
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, 10) == {"type": "once"}

    run(scenario)


def test_a_specific_channel_is_received_again_after_a_cancelled_receive() -> None:
    async def scenario() -> None:
        layer, hub = PubSubChannelLayer(), get_hub()
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        pg_name = layer._taps.pg_name("p", channel[: channel.index("!") + 1])
        waiting = asyncio.get_running_loop().create_task(layer.receive(channel))
        await eventually(lambda: waiters(layer, channel) == 1, "the wait")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await eventually(lambda: pg_name not in hub.listened, "the UNLISTEN")
        assert layer._inbox.groups == {}  # its memberships went with it
        # The consumer receives again (as after a timed-out wait): listened to again.
        again = asyncio.get_running_loop().create_task(layer.receive(channel))
        await eventually(lambda: pg_name in hub.listened, "the LISTEN")
        await layer.send(channel, {"type": "still here"})
        assert await asyncio.wait_for(again, 10) == {"type": "still here"}

    run(scenario)


def test_capacities_per_channel_pattern_apply_where_the_channel_lives() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer(capacity=3, channel_capacity={"one": 1, "big*": 5})
        sender = PubSubChannelLayer()
        waiting = asyncio.get_running_loop().create_task(layer.receive("one"))
        await eventually(lambda: waiters(layer, "one") == 1, "the wait")
        await sender.send("one", {"type": "taken"})
        assert await asyncio.wait_for(waiting, 10) == {"type": "taken"}
        # A normal channel's messages wait in PostgreSQL: counted there, at once.
        await layer.send("one", {"type": "fills it"})
        with pytest.raises(ChannelFull):
            await layer.send("one", {"type": "refused"})
        assert await receive(layer, "one") == {"type": "fills it"}
        big = await layer.new_channel("big")
        for n in range(5):
            await layer.send(big, {"type": "m", "n": n})
        await eventually(lambda: layer._inbox.full(big), "five arrivals")
        with pytest.raises(ChannelFull):
            await layer.send(big, {"type": "m", "n": 5})

    run(scenario)


def test_a_member_that_changes_its_message_changes_nobody_elses() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        a, b = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("room", a)
        await layer.group_add("room", b)
        await layer.group_send("room", {"type": "chat", "text": "hi"})
        mine = await receive(layer, a)
        mine["text"] = "changed"
        del mine["type"]
        assert await receive(layer, b) == {"type": "chat", "text": "hi"}

    run(scenario)


def test_repeated_group_sends_through_async_to_sync() -> None:
    layer = PubSubChannelLayer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("room", channel)
    for n in range(3):
        async_to_sync(layer.group_send)("room", {"type": "m", "n": n})
    assert [async_to_sync(layer.receive)(channel)["n"] for _ in range(3)] == [0, 1, 2]
