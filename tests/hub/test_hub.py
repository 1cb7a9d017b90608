"""The per-process hub and subscribe(), in this process, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.test import Client

from django_pgpubsub import AsyncPubSub, Event, InvalidChannel, aconnect, subscribe
from django_pgpubsub.db.aconnection import AsyncDriverConnection, open_async_connection
from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.hub.hub import Hub, get_hub
from django_pgpubsub.hub.subscription import RESYNC_CHANNEL
from django_pgpubsub.views import EventStream

pytestmark = pytest.mark.django_db(transaction=True)
needs_psycopg3 = pytest.mark.skipif(not is_psycopg3, reason="the psycopg2 run tests the refusal")

T = TypeVar("T")


def run(scenario: Callable[[AsyncPubSub], Awaitable[T]]) -> T:
    """Run ``scenario(sender)`` on a fresh loop (so a fresh hub), closing the hub after."""

    async def main() -> T:
        async with await aconnect() as sender:
            try:
                return await asyncio.wait_for(scenario(sender), 20)
            finally:
                await get_hub().close()

    return asyncio.run(main())


async def next_event(events: AsyncIterator[Event]) -> tuple[str, str]:
    event = await asyncio.wait_for(anext(events), 10)
    return event.channel, event.payload


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    async def poll() -> None:
        while not await check():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), 10)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@needs_psycopg3
def test_subscribers_share_one_connection_and_get_their_channels() -> None:
    async def scenario(sender: AsyncPubSub) -> None:
        async with subscribe("a", "b") as both, subscribe("b") as only_b:
            hub = get_hub()
            assert hub.listened == {"a", "b"}
            assert await hub.server_channels() == ["a", "b"]
            assert hub.subscriptions() == {both, only_b}
            await sender.notify("a", "1")
            await sender.notify("b", "2")
            both_events, b_events = aiter(both), aiter(only_b)
            assert await next_event(both_events) == ("a", "1")
            assert await next_event(both_events) == ("b", "2")
            assert await next_event(b_events) == ("b", "2")
        # Left: UNLISTENed in the background.
        await eventually(lambda: _no_channels(hub), "the UNLISTEN")
        assert hub.subscriptions() == set()

    run(scenario)


async def _no_channels(hub: object) -> bool:
    return await get_hub().server_channels() == []


@needs_psycopg3
def test_leaving_unlistens_only_channels_nobody_wants() -> None:
    async def scenario(sender: AsyncPubSub) -> None:
        hub = get_hub()
        async with subscribe("keep") as kept:
            async with subscribe("keep", "drop"):
                assert await hub.server_channels() == ["drop", "keep"]

            async def only_keep() -> bool:
                c = await hub.server_channels()
                return c == ["keep"]

            await eventually(only_keep, "UNLISTEN drop")
            await sender.notify("keep", "still")
            assert await next_event(aiter(kept)) == ("keep", "still")

    run(scenario)


@needs_psycopg3
def test_timeouts_and_a_full_queue_becomes_one_resync() -> None:
    async def scenario(sender: AsyncPubSub) -> None:
        async with subscribe("a", queue_size=3) as slow:
            events = slow.events(timeout=0.05)
            assert await anext(events) is None
            for n in range(5):  # two more than fit
                await sender.notify("a", str(n))
            await sender.notify("marker", "")  # not subscribed

            async def delivered() -> bool:
                return len(slow._queue) >= 1 and slow._queue[0].channel == RESYNC_CHANNEL

            await eventually(delivered, "the overflow")
            resync = await anext(events)
            assert resync is not None
            assert (resync.channel, resync.data) == (RESYNC_CHANNEL, {"reason": "overflow"})
            # After the resync, the events from the one that did not fit on.
            got = [await anext(events) for _ in range(2)]
            assert [e.payload for e in got if e is not None] == ["3", "4"]

    run(scenario)


@needs_psycopg3
def test_a_terminated_connection_resyncs_then_delivers_again() -> None:
    async def scenario(sender: AsyncPubSub) -> None:
        async with subscribe("a") as subscription:
            hub = get_hub()
            assert hub.connection is not None
            old_pid = hub.connection.pid
            await sender.conn.execute("SELECT pg_terminate_backend(%s)", [old_pid])
            events = aiter(subscription)
            assert await next_event(events) == (RESYNC_CHANNEL, '{"reason":"reconnected"}')
            assert hub.connection.pid != old_pid
            assert await hub.server_channels() == ["a"]
            await sender.notify("a", "after")
            assert await next_event(events) == ("a", "after")

    run(scenario)


@needs_psycopg3
def test_bad_subscriptions_are_refused_before_any_sql() -> None:
    async def scenario(sender: AsyncPubSub) -> None:
        with pytest.raises(InvalidChannel):
            async with subscribe():
                pass
        with pytest.raises(InvalidChannel):
            async with subscribe("ok", "x" * 64):
                pass
        assert get_hub().subscriptions() == set()

    run(scenario)


@pytest.mark.skipif(is_psycopg3, reason="the psycopg 3 run tests the hub itself")
def test_with_psycopg2_subscribe_says_psycopg3_is_needed() -> None:
    async def scenario() -> None:
        async with subscribe("a"):
            pass

    with pytest.raises(ImproperlyConfigured, match="needs psycopg 3"):
        asyncio.run(scenario())


@pytest.mark.skipif(is_psycopg3, reason="the psycopg 3 run streams (tests/hub/test_sse.py)")
def test_with_psycopg2_the_event_stream_view_says_psycopg3_is_needed() -> None:
    with pytest.raises(ImproperlyConfigured, match="needs psycopg 3"):
        Client().get("/events/?channel=sse.a")


@needs_psycopg3
def test_a_drain_during_a_statement_leaves_its_result_to_psycopg() -> None:
    """The hub's reader drains while other tasks run statements on its
    connection. Reading the socket then would take the statement's result
    from under psycopg, which would wait for the socket until the next
    traffic: with none, for ever."""

    async def scenario() -> None:
        connection = await open_async_connection()
        try:
            statement = asyncio.get_running_loop().create_task(connection.execute("SELECT 1"))
            while not connection._lock.locked():  # the statement is on its way
                await asyncio.sleep(0)
            await asyncio.sleep(0)  # psycopg sent it and waits for the answer
            time.sleep(0.2)  # the loop is busy (load): the answer arrives meanwhile
            assert connection.drain() == []  # the reader's turn, before psycopg's
            assert await asyncio.wait_for(statement, 5) == [(1,)]
        finally:
            await connection.close()

    asyncio.run(scenario())


@needs_psycopg3
def test_an_event_stream_dropped_before_its_body_starts_releases_its_subscription() -> None:
    async def scenario(sender: AsyncPubSub) -> None:
        hub = get_hub()
        stream = EventStream(await hub.subscribe(["dropped"]), keepalive=15)
        body = aiter(stream)  # what Django holds: a generator never started
        assert len(hub.subscriptions()) == 1
        del stream, body
        gc.collect()
        assert hub.subscriptions() == set()
        await eventually(lambda: _server_channels_are([]), "the UNLISTEN")

    async def _server_channels_are(expected: list[str]) -> bool:
        return await get_hub().server_channels() == expected

    run(scenario)


async def _in_step(hub: Hub) -> bool:
    """Whether the hub's record of listened channels is what its connection LISTENs to."""
    return sorted(hub.listened) == await hub.server_channels()


@needs_psycopg3
def test_subscribers_cancelled_inside_subscribe_leave_the_hub_in_step_with_the_server() -> None:
    """Django 5 cancels a view whose client leaves, also while it subscribes."""

    async def scenario(sender: AsyncPubSub) -> None:
        hub = get_hub()
        channels = [f"cancel.{n}" for n in range(12)]
        for steps in range(40):  # cancelled at every point of the LISTEN round
            task = asyncio.get_running_loop().create_task(hub.subscribe(channels))
            await asyncio.sleep(steps * 0.0005)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                (await task).close()
            await eventually(lambda: _in_step(hub), f"the record to match the server ({steps})")
        async with subscribe(channels[0]) as later:
            await sender.notify(channels[0], "heard")
            assert await next_event(aiter(later)) == (channels[0], "heard")

    run(scenario)


@needs_psycopg3
def test_after_an_unexpected_error_a_new_subscriber_hears_its_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(sender: AsyncPubSub) -> None:
        hub = get_hub()
        armed = [True]
        drain = AsyncDriverConnection.drain

        def failing_once(self: AsyncDriverConnection) -> list[Event]:
            if armed and self is hub.connection:
                armed.clear()
                raise RuntimeError("a bug in the hub")
            return drain(self)

        async with subscribe("boom") as first:
            monkeypatch.setattr(AsyncDriverConnection, "drain", failing_once)
            await sender.notify("boom", "1")
            with pytest.raises(ConnectionLost):
                async for _ in first:
                    pass
        async with subscribe("boom") as second:
            await sender.notify("boom", "2")
            assert await next_event(aiter(second)) == ("boom", "2")
            assert await _in_step(hub)

    run(scenario)


@needs_psycopg3
def test_a_stream_collected_in_another_thread_is_unlistened() -> None:
    """Cyclic garbage may be collected in any thread: the release still goes
    through the hub's loop, and UNLISTENs."""

    async def scenario(sender: AsyncPubSub) -> None:
        hub = get_hub()
        stream = EventStream(await hub.subscribe(["collected"]), keepalive=15)
        stream.cycle = stream  # type: ignore[attr-defined]  # only the cyclic GC frees it
        assert await hub.server_channels() == ["collected"]
        gc.disable()
        try:
            del stream
            await asyncio.to_thread(gc.collect)
        finally:
            gc.enable()
        await eventually(lambda: _hub_listens_to(hub, []), "the UNLISTEN")
        assert hub.subscriptions() == set()
        assert hub.listened == frozenset()

    run(scenario)


async def _hub_listens_to(hub: Hub, expected: list[str]) -> bool:
    return await hub.server_channels() == expected
