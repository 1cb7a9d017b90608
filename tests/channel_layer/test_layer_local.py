"""The Channels layer's messages to itself: a ``send()`` to one of its own
channels and a ``group_send`` to its own members skip PostgreSQL and the hub's
thread, with the same transactions, capacity, expiry and order.

Most tests freeze the hub's thread (:func:`hub_frozen`): nothing can then come
through PostgreSQL, so whatever arrives came straight from the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from django.db import transaction

from django_pgpubsub import aconnect
from django_pgpubsub.channel_layer import messages
from django_pgpubsub.channel_layer.subscriptions import kind_of
from django_pgpubsub.hub import runtime
from django_pgpubsub.layers import PubSubChannelLayer
from django_pgpubsub.models import LayerMessage
from tests.channel_layer.test_layer import LAYER_TESTS, MESSAGE, eventually, receive, run

pytestmark = LAYER_TESTS


@contextlib.contextmanager
def hub_frozen() -> Iterator[None]:
    """The hub's thread blocked: no message goes through PostgreSQL meanwhile."""
    frozen, thaw = threading.Event(), threading.Event()

    def freeze() -> None:
        frozen.set()
        thaw.wait(60)

    runtime.hub_loop().call_soon_threadsafe(freeze)
    assert frozen.wait(30)
    try:
        yield
    finally:
        thaw.set()


def queued(layer: PubSubChannelLayer, channel: str) -> list[dict[str, Any]]:
    """The messages waiting in ``channel``, without taking them."""
    return [message for _, message in layer._inbox.channels[channel].messages]


def types(layer: PubSubChannelLayer, channel: str) -> list[str]:
    return [message["type"] for message in queued(layer, channel)]


def in_another_thread(coroutine: Any) -> Any:
    """Run ``coroutine`` on an event loop of a new thread (async code: no
    sync caller waits for it) and return its result."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(coroutine)))
    thread.start()
    thread.join(30)
    return results[0]


def test_a_send_to_an_own_channel_needs_neither_postgresql_nor_the_hub() -> None:
    async def scenario() -> None:
        layer, other = PubSubChannelLayer(), PubSubChannelLayer()
        channel = await layer.new_channel()
        async with await aconnect() as spy:  # the process channel's NOTIFYs
            await spy.listen(messages.pg_channel("asgi", *kind_of(channel)))
            with hub_frozen():
                await asyncio.wait_for(layer.send(channel, MESSAGE), 10)
                assert await receive(layer, channel) == MESSAGE
            await other.send(channel, {"type": "marker"})  # another layer: through PostgreSQL
            assert await receive(layer, channel) == {"type": "marker"}
            first = await anext(spy.events(timeout=10))
            assert first is not None
            assert first.payload == messages.encode(channel, {"type": "marker"})

    run(scenario)


def test_an_own_channel_receives_exactly_what_another_process_would() -> None:
    sent = {
        **MESSAGE,
        "tuple": (1, (2, "3")),
        "keys": {1: "int", 2.5: "float", False: "bool", None: "none"},
        "bytearray": bytearray(b"ab"),
        "marker in text": "\x00b",
        "big": "é" * 20_000,
    }
    expected = {
        **MESSAGE,
        "list": [1, "two", b"3", {"nested": [None]}],
        "tuple": [1, [2, "3"]],
        "keys": {"1": "int", "2.5": "float", "false": "bool", "null": "none"},
        "bytearray": b"ab",
        "marker in text": "\x00b",
        "big": "é" * 20_000,
    }

    async def scenario() -> None:
        layer, other = PubSubChannelLayer(), PubSubChannelLayer()
        channel = await layer.new_channel()
        await layer.send(channel, sent)
        await other.send(channel, sent)  # through PostgreSQL (and a stored row)
        local, remote = await receive(layer, channel), await receive(layer, channel)
        assert local == remote == expected
        assert repr(local) == repr(remote)  # the same types, the same key order
        with pytest.raises(TypeError):
            await layer.send(channel, {"type": "x", "value": {1, 2}})
        with pytest.raises(TypeError):
            await other.send(channel, {"type": "x", "value": {1, 2}})
        changed: dict[str, Any] = {"type": "changed later", "list": [1]}
        await layer.send(channel, changed)
        changed["list"].append(2)
        assert await receive(layer, channel) == {"type": "changed later", "list": [1]}

    run(scenario)
    assert LayerMessage.objects.count() == 0  # the local copy of the big one needed no row


def test_a_full_own_channel_refuses_at_once_on_the_fast_path() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer(capacity=2, channel_capacity={"tiny.*": 1})
        channel, tiny = await layer.new_channel(), await layer.new_channel("tiny")
        with hub_frozen():
            await asyncio.wait_for(layer.send(channel, {"type": "m", "n": 0}), 10)
            await asyncio.wait_for(layer.send(channel, {"type": "m", "n": 1}), 10)
            with pytest.raises(ChannelFull):
                await asyncio.wait_for(layer.send(channel, {"type": "m", "n": 2}), 10)
            await asyncio.wait_for(layer.send(tiny, {"type": "m"}), 10)
            with pytest.raises(ChannelFull):
                await asyncio.wait_for(layer.send(tiny, {"type": "m"}), 10)
            assert [(await receive(layer, channel))["n"] for _ in range(2)] == [0, 1]
            await asyncio.wait_for(layer.send(channel, {"type": "m", "n": 3}), 10)
            assert (await receive(layer, channel))["n"] == 3

    run(scenario)


def test_messages_expire_on_the_fast_path() -> None:
    async def scenario() -> None:
        layer = PubSubChannelLayer(expiry=0.2, capacity=1)
        channel = await layer.new_channel()
        with hub_frozen():
            await asyncio.wait_for(layer.send(channel, {"type": "old"}), 10)
            await asyncio.sleep(0.3)  # past the expiry (a wait, not a timed assertion)
            # The expired message no longer counts towards the capacity.
            await asyncio.wait_for(layer.send(channel, {"type": "new"}), 10)
            assert await receive(layer, channel) == {"type": "new"}
            assert queued(layer, channel) == []

    run(scenario)


def test_a_sync_send_in_a_transaction_reaches_an_own_channel_at_commit_only() -> None:
    layer = PubSubChannelLayer()
    channel = async_to_sync(layer.new_channel)()
    send = async_to_sync(layer.send)
    with hub_frozen():
        with transaction.atomic():
            send(channel, {"type": "rolled back"})
            transaction.set_rollback(True)
        assert types(layer, channel) == []
        with transaction.atomic():
            send(channel, {"type": "first"})
            with transaction.atomic():  # a savepoint, rolled back
                send(channel, {"type": "savepoint rolled back"})
                transaction.set_rollback(True)
            send(channel, {"type": "second"})
            assert types(layer, channel) == []
        assert types(layer, channel) == ["first", "second"]
        send(channel, {"type": "no transaction"})  # at once
        assert types(layer, channel) == ["first", "second", "no transaction"]


def test_a_send_deferred_to_its_commit_comes_after_what_was_sent_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = PubSubChannelLayer(capacity=2)
    channel = async_to_sync(layer.new_channel)()
    send = async_to_sync(layer.send)
    with hub_frozen():
        with transaction.atomic():
            send(channel, {"type": "at commit"})
            in_another_thread(layer.send(channel, {"type": "meanwhile"}))
            assert types(layer, channel) == ["meanwhile"]
        assert types(layer, channel) == ["meanwhile", "at commit"]
        # The channel was not full at send(), and is at the commit: dropped, with a warning.
        in_another_thread(layer.receive(channel))
        with caplog.at_level(logging.WARNING, "django_pgpubsub.layers"):
            with transaction.atomic():
                send(channel, {"type": "dropped at commit"})
                in_another_thread(layer.send(channel, {"type": "fills it"}))
            assert types(layer, channel) == ["at commit", "fills it"]
        assert f"Channel {channel!r} is full" in caplog.text
        # Full at send(): refused at once.
        with pytest.raises(ChannelFull), transaction.atomic():
            send(channel, {"type": "refused"})


def test_immediate_reaches_an_own_channel_at_once_inside_a_transaction() -> None:
    layer = PubSubChannelLayer(immediate=True)
    channel = async_to_sync(layer.new_channel)()

    async def send_within(message: dict[str, Any]) -> None:  # as send(), but bounded
        await asyncio.wait_for(layer.send(channel, message), 10)

    with hub_frozen():
        with transaction.atomic():
            async_to_sync(send_within)({"type": "at once"})
            assert types(layer, channel) == ["at once"]
            transaction.set_rollback(True)
        assert types(layer, channel) == ["at once"]


def test_receivers_on_other_threads_loops_are_woken() -> None:
    layer = PubSubChannelLayer()
    channel = async_to_sync(layer.new_channel)()
    received: list[dict[str, Any]] = []

    def receiver() -> None:
        async def main() -> None:
            for _ in range(2):
                received.append(await receive(layer, channel))

        asyncio.run(main())

    def waiting() -> bool:
        return any(not future.done() for _, future in layer._inbox.channels[channel].waiters)

    with hub_frozen():
        thread = threading.Thread(target=receiver)
        thread.start()

        async def from_async_code() -> None:
            await eventually(waiting, "the receive()")
            await layer.send(channel, {"type": "from a coroutine"})
            await eventually(lambda: len(received) == 1, "the first message")
            await eventually(waiting, "the second receive()")

        run(from_async_code)
        with transaction.atomic():  # delivered by the commit, on this thread
            async_to_sync(layer.send)(channel, {"type": "from a commit"})
        thread.join(30)
    assert received == [{"type": "from a coroutine"}, {"type": "from a commit"}]


def test_one_senders_messages_to_an_own_channel_keep_their_order() -> None:
    layer = PubSubChannelLayer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("room", channel)
    send, group_send = async_to_sync(layer.send), async_to_sync(layer.group_send)
    with hub_frozen():
        send(channel, {"type": "1"})
        with transaction.atomic():
            send(channel, {"type": "2"})
            group_send("room", {"type": "3"})
            send(channel, {"type": "4"})
        group_send("room", {"type": "5"})  # no transaction: on this thread's connection
        send(channel, {"type": "6"})
        in_another_thread(layer.send(channel, {"type": "7"}))
        assert types(layer, channel) == ["1", "2", "3", "4", "5", "6", "7"]

    async def from_async_code() -> None:
        await layer.group_send("room", {"type": "8"})
        await layer.send(channel, {"type": "9"})
        await layer.group_send("room", {"type": "10", "big": "x" * 10_000})
        await layer.send(channel, {"type": "11"})
        got = [(await receive(layer, channel))["type"] for _ in range(11)]
        assert got == [str(n) for n in range(1, 12)]
        # Each group message came once: the layer's own NOTIFYs are skipped.
        await PubSubChannelLayer().send(channel, {"type": "marker"})
        assert await receive(layer, channel) == {"type": "marker"}

    run(from_async_code)


def test_group_send_reaches_own_and_other_members_exactly_once() -> None:
    layer, other = PubSubChannelLayer(), PubSubChannelLayer()
    mine = [async_to_sync(layer.new_channel)() for _ in range(2)]
    theirs = async_to_sync(other.new_channel)()
    for channel in [*mine, mine[0]]:
        async_to_sync(layer.group_add)("room", channel)
    async_to_sync(other.group_add)("room", theirs)
    with hub_frozen():  # the commit hands it to this layer's members
        with transaction.atomic():
            async_to_sync(layer.group_send)("room", {"type": "committed"})
            assert [types(layer, channel) for channel in mine] == [[], []]
        assert [types(layer, channel) for channel in mine] == [["committed"]] * 2
        assert types(other, theirs) == []

    async def scenario() -> None:
        await layer.group_send("room", {"type": "big", "text": "é" * 9000})
        for channel in [*mine, *mine]:
            await layer.send(channel, {"type": "marker"})
        await layer.send(theirs, {"type": "marker"})  # after the group message, as sent
        for channel in mine:
            got = [(await receive(layer, channel))["type"] for _ in range(4)]
            assert got == ["committed", "big", "marker", "marker"]
        got = [(await receive(other, theirs))["type"] for _ in range(3)]
        assert got == ["committed", "big", "marker"]
        # Nothing came twice through the layer's own tap.
        await other.send(mine[0], {"type": "last"})
        assert await receive(layer, mine[0]) == {"type": "last"}

    run(scenario)


def test_in_a_manual_transaction_own_messages_wait_for_the_commit() -> None:
    # set_autocommit(False) has no on_commit(): they go through PostgreSQL.
    layer = PubSubChannelLayer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("room", channel)
    send, group_send = async_to_sync(layer.send), async_to_sync(layer.group_send)
    transaction.set_autocommit(False)
    try:
        send(channel, {"type": "rolled back"})
        group_send("room", {"type": "rolled back"})
        transaction.rollback()
        send(channel, {"type": "committed"})
        group_send("room", {"type": "group committed"})
        assert types(layer, channel) == []
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    got = [async_to_sync(receive)(layer, channel)["type"] for _ in range(2)]
    assert got == ["committed", "group committed"]
    async_to_sync(PubSubChannelLayer().send)(channel, {"type": "marker"})
    assert async_to_sync(receive)(layer, channel) == {"type": "marker"}
