"""The Channels layer (django_pgpubsub.layers), in this process, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from django.db import connection, transaction
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_pgpubsub import aconnect
from django_pgpubsub.channel_layer import maintenance, messages
from django_pgpubsub.hub.hub import APPLICATION_NAME, get_hub
from django_pgpubsub.layers import RESYNC_TYPE, PubSubChannelLayer
from django_pgpubsub.models import LayerMessage

# The marks of every layer test module: a real database, psycopg 3, a new hub each.
LAYER_TESTS = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not is_psycopg3, reason="the hub needs psycopg 3"),
    pytest.mark.usefixtures("fresh_hub"),
]
pytestmark = LAYER_TESTS
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(scenario(), 30)

    return asyncio.run(main())


async def receive(layer: PubSubChannelLayer, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), 10)


async def eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


MESSAGE = {
    "type": "test.message",
    "text": "héllo",
    "bytes": b"\x00\xff binary",
    "n": 3,
    "x": 1.5,
    "ok": True,
    "none": None,
    "list": [1, "two", b"3", {"nested": [None]}],
}


def test_send_and_receive_on_a_new_channel_round_trips_every_value_type() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        channel = await layer.new_channel()
        other = await layer.new_channel("other")
        assert channel != other
        assert "!" in channel
        assert other.startswith("other.")
        await layer.send(channel, MESSAGE)
        await layer.send(channel, {"type": "second"})
        assert await receive(layer, channel) == MESSAGE
        assert await receive(layer, channel) == {"type": "second"}

    run(scenario)


def test_groups_deliver_to_each_member_once_with_one_notify() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        a, b, c = [await layer.new_channel() for _ in range(3)]
        await layer.group_add("room", a)
        await layer.group_add("room", b)
        await layer.group_add("room", b)  # twice: still one member
        await layer.group_add("elsewhere", c)
        async with await aconnect() as spy:  # one NOTIFY on the group's channel
            await spy.listen(messages.pg_channel("asgi", "g", "room"))
            await layer.group_send("room", {"type": "hi"})
            notifies = spy.events(timeout=10)
            first = await anext(notifies)
            assert first is not None
            assert first.payload == f'["room",{{"type":"hi"}},"{layer.process}"]'
        assert await receive(layer, a) == {"type": "hi"}
        assert await receive(layer, b) == {"type": "hi"}
        await layer.group_discard("room", b)
        await layer.group_discard("room", "never.added!x")
        await layer.group_send("room", {"type": "again"})
        await layer.send(b, {"type": "marker"})
        await layer.send(c, {"type": "marker"})
        assert await receive(layer, a) == {"type": "again"}
        assert await receive(layer, b) == {"type": "marker"}  # nothing of "room" before it
        assert await receive(layer, c) == {"type": "marker"}

    run(scenario)


def test_a_group_is_listened_to_while_it_has_members() -> None:
    async def scenario() -> None:
        layer, hub = PubSubChannelLayer(), get_hub()
        channel = await layer.new_channel()
        group = "g" * 99  # longer than PostgreSQL's 63 bytes: hashed
        pg_name = messages.pg_channel("asgi", "g", group)
        assert len(pg_name) <= 63
        assert pg_name != messages.pg_channel("asgi", "g", "g" * 98)
        await layer.group_add(group, channel)
        assert pg_name in await hub.server_channels()
        await layer.group_send(group, {"type": "long"})
        assert await receive(layer, channel) == {"type": "long"}
        await layer.group_discard(group, channel)
        await eventually(lambda: pg_name not in hub.listened, "the UNLISTEN")
        assert pg_name not in await hub.server_channels()

    run(scenario)


def test_names_are_checked_as_the_spec_says() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        with pytest.raises(TypeError):
            await layer.send("bad name", {"type": "x"})
        with pytest.raises(TypeError):
            await layer.group_add("x" * 100, "ok")
        with pytest.raises(AssertionError):
            await layer.send("ok", "not a dict")  # type: ignore[arg-type]
        assert layer.extensions == ["groups", "flush"]

    run(scenario)


def test_a_full_channel_refuses_sends_with_channel_full() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer(capacity=3, channel_capacity={"tiny.*": 1})
        channel = await layer.new_channel()
        for n in range(3):
            await layer.send(channel, {"type": "m", "n": n})
        await eventually(lambda: layer._inbox.full(channel), "three arrivals")
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"type": "m", "n": 3})
        assert [(await receive(layer, channel))["n"] for _ in range(3)] == [0, 1, 2]
        tiny = await layer.new_channel("tiny")
        await layer.send(tiny, {"type": "m"})
        await eventually(lambda: layer._inbox.full(tiny), "one arrival")
        with pytest.raises(ChannelFull):
            await layer.send(tiny, {"type": "m"})

    run(scenario)


def test_messages_expire() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer(expiry=0.2)
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "old"})
        await eventually(lambda: bool(layer._inbox.channels[channel].messages), "the arrival")
        await asyncio.sleep(0.3)  # past the expiry (a wait, not a timed assertion)
        await layer.send(channel, {"type": "new"})
        assert await receive(layer, channel) == {"type": "new"}

    run(scenario)


def test_flush_forgets_messages_and_groups() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.send(channel, {"type": "before"})
        await eventually(lambda: bool(layer._inbox.channels[channel].messages), "the arrival")
        await layer.flush()
        assert layer._inbox.groups == {}
        channel = await layer.new_channel()
        await layer.group_send("room", {"type": "to nobody"})
        await layer.send(channel, {"type": "after"})
        assert await receive(layer, channel) == {"type": "after"}

    run(scenario)


def test_a_receive_cancelled_mid_wait_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        layer, hub = PubSubChannelLayer(), get_hub()
        waiting = asyncio.get_running_loop().create_task(layer.receive("worker"))
        pg_name = messages.pg_channel("asgi", "c", "worker")
        await eventually(lambda: bool(layer._inbox.channels.get("worker", None)), "the queue")
        await eventually(lambda: pg_name in hub.listened, "the LISTEN")
        await eventually(lambda: bool(layer._inbox.channels["worker"].waiters), "the wait")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert "worker" not in layer._inbox.channels
        await eventually(lambda: pg_name not in hub.listened, "the UNLISTEN")
        assert layer._taps.listened == frozenset()
        # A normal channel is listened to again by the next receive().
        again = asyncio.get_running_loop().create_task(layer.receive("worker"))
        await eventually(lambda: pg_name in hub.listened, "the LISTEN")
        await layer.send("worker", {"type": "job"})
        assert await asyncio.wait_for(again, 10) == {"type": "job"}

    run(scenario)


def test_a_message_of_any_size_goes_through_a_row_that_is_then_removed() -> None:
    big = {"type": "big", "text": "é" * 20_000, "bytes": bytes(range(256)) * 40}

    async def scenario() -> None:
        # The sender is another layer, as another process would be: a layer's
        # messages to its own channels skip PostgreSQL.
        layer, sender = PubSubChannelLayer(), PubSubChannelLayer()
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await sender.send(channel, big)
        await sender.send(channel, {"type": "small after"})
        assert await receive(layer, channel) == big
        assert await receive(layer, channel) == {"type": "small after"}  # order kept
        await sender.group_send("room", big)
        assert await receive(layer, channel) == big

    run(scenario)
    # The specific channel's row went at delivery; the group's waits for its expiry.
    [kept] = LayerMessage.objects.all()
    LayerMessage.objects.update(expires_at=kept.expires_at - timedelta(seconds=61))
    assert run(lambda: maintenance.sweep(get_hub())) == 1
    assert LayerMessage.objects.count() == 0


def test_inside_async_to_sync_sends_wait_for_the_commit() -> None:
    # immediate is another layer, as another process would be: its messages go
    # through PostgreSQL at once, and arrive before the transaction ends.
    layer, immediate = PubSubChannelLayer(), PubSubChannelLayer(immediate=True)
    channel = async_to_sync(layer.new_channel)()
    send = async_to_sync(layer.send)

    def next_type() -> str:
        return str(async_to_sync(receive)(layer, channel)["type"])

    with transaction.atomic():
        async_to_sync(layer.group_send)("nobody", {"type": "x"})  # usable in a transaction
        send(channel, {"type": "rolled back"})
        async_to_sync(immediate.send)(channel, {"type": "immediate"})
        assert next_type() == "immediate"
        transaction.set_rollback(True)
    with transaction.atomic():
        send(channel, {"type": "committed", "big": "x" * 10_000})
        send(channel, {"type": "committed"})
        async_to_sync(immediate.send)(channel, {"type": "before the commit"})
        assert next_type() == "before the commit"
    assert [next_type() for _ in range(2)] == ["committed", "committed"]
    async_to_sync(immediate.send)(channel, {"type": "marker"})
    assert next_type() == "marker"  # nothing of the rolled back transaction


def test_loops_and_threads_share_the_one_listening_connection() -> None:
    layer = PubSubChannelLayer()
    received: list[dict[str, Any]] = []
    channels: list[str] = []
    ready = threading.Barrier(4)

    def consumer() -> None:
        async def main() -> None:
            channel = await layer.new_channel()
            await layer.group_add("everyone", channel)
            channels.append(channel)
            ready.wait()
            received.append(await receive(layer, channel))

        asyncio.run(main())

    threads = [threading.Thread(target=consumer) for _ in range(3)]
    for thread in threads:
        thread.start()
    ready.wait()
    async_to_sync(layer.group_send)("everyone", {"type": "all"})
    for thread in threads:
        thread.join(30)
    assert received == [{"type": "all"}] * 3
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [APPLICATION_NAME],
        )
        assert cursor.fetchone() == (1,)


def test_after_a_reconnect_channels_are_told_with_resync() -> None:
    async def scenario() -> None:
        layer, hub = PubSubChannelLayer(resync=True), get_hub()
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        assert hub.connection is not None
        async with await aconnect() as other:
            await other.conn.execute("SELECT pg_terminate_backend(%s)", [hub.connection.pid])
        assert await receive(layer, channel) == {"type": RESYNC_TYPE, "reason": "reconnected"}
        await layer.group_send("room", {"type": "after"})
        assert await receive(layer, channel) == {"type": "after"}

    run(scenario)


def test_a_full_member_misses_a_group_message_that_the_others_get() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer(capacity=1)
        full, free = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("room", full)
        await layer.group_add("room", free)
        await layer.send(full, {"type": "fills it"})
        await eventually(lambda: layer._inbox.full(full), "the arrival")
        await layer.group_send("room", {"type": "to both"})
        assert await receive(layer, free) == {"type": "to both"}
        assert await receive(layer, full) == {"type": "fills it"}
        await layer.send(full, {"type": "marker"})
        assert await receive(layer, full) == {"type": "marker"}

    run(scenario)


def test_flush_deletes_stored_messages() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer()
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "big", "text": "x" * 9000})
        assert (await receive(layer, channel))["type"] == "big"
        await layer.flush()

    run(scenario)
    assert LayerMessage.objects.count() == 0
