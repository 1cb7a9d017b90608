"""How the layer tells an ``async_to_sync`` caller (whose transaction decides)
from async code (sent at once), and what it does if asgiref stops telling."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections, transaction

from django_pgpubsub.channel_layer import sending
from django_pgpubsub.hub import runtime
from django_pgpubsub.layers import PubSubChannelLayer
from tests.channel_layer.test_layer import LAYER_TESTS, eventually, receive, run

pytestmark = LAYER_TESTS


async def probe() -> bool | None:
    return sending.sync_caller_waits()


def test_asgiref_still_says_whether_a_sync_caller_waits() -> None:
    # Fails first if asgiref drops AsyncToSync.executors.current: the layer
    # then sends every message from the caller's thread (right, but slower).
    assert asyncio.run(probe()) is False  # async code: nobody waits
    assert async_to_sync(probe)() is True  # a sync caller waits

    def sync_inside_async() -> bool | None:
        return async_to_sync(probe)()

    async def nested() -> bool | None:
        return await sync_to_async(sync_inside_async)()

    assert asyncio.run(nested()) is True
    assert sending.sync_caller_waits() is False  # no coroutine at all


def test_if_asgiref_stops_saying_sends_still_wait_for_the_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sending, "sync_caller_waits", lambda: None)
    layer = PubSubChannelLayer()
    channel = async_to_sync(layer.new_channel)()
    with transaction.atomic():
        async_to_sync(layer.send)(channel, {"type": "rolled back"})
        transaction.set_rollback(True)
    with transaction.atomic():
        async_to_sync(layer.send)(channel, {"type": "committed"})

    async def from_async_code() -> None:  # no transaction: sent at once
        await layer.send(channel, {"type": "async"})
        assert await receive(layer, channel) == {"type": "committed"}
        assert await receive(layer, channel) == {"type": "async"}
        # It went through asgiref's sync thread, as Django's ORM would: close there.
        await sync_to_async(connections.close_all)()

    run(from_async_code)


def test_a_call_on_the_hubs_thread_returns_raises_and_is_cancelled_as_its_coroutine() -> None:
    # Every send of the layer takes this hop to the hub's thread and back.
    async def scenario() -> None:
        async def value() -> int:
            assert runtime.on_hub_loop()
            return 42

        async def fails() -> None:
            raise KeyError("on the hub's thread")

        started, ended = threading.Event(), []

        async def waits() -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                ended.append("cancelled")
                raise

        assert await runtime.call(value()) == 42
        with pytest.raises(KeyError, match="hub's thread"):
            await runtime.call(fails())
        waiting = asyncio.ensure_future(runtime.call(waits()))
        assert await asyncio.to_thread(started.wait, 10)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await eventually(lambda: ended == ["cancelled"], "the coroutine's cancellation")

    run(scenario)
