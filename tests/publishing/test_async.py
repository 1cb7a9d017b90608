"""The async API (aconnect, AsyncPubSub, anotify) and async handlers; real PostgreSQL."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_pgpubsub import (
    AsyncPubSub,
    DurableEvent,
    Event,
    InvalidChannel,
    PayloadTooLarge,
    Registry,
    aconnect,
    anotify,
    notify,
)
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.testing import dispatch
from tests.helpers import ROOT, run_listener

pytestmark = pytest.mark.django_db(transaction=True)
needs_psycopg3 = pytest.mark.skipif(not is_psycopg3, reason="the psycopg2 run tests the refusal")

T = TypeVar("T")


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    """Run ``coroutine`` to completion from this (sync) test."""
    return asyncio.run(asyncio.wait_for(coroutine(), 20))


async def take(events: AsyncIterator[Event | None], count: int) -> list[Event | None]:
    return [await anext(events) for _ in range(count)]


@needs_psycopg3
def test_listen_notify_and_events_round_trip() -> None:
    async def scenario() -> list[Any]:
        async with aconnect() as pubsub, await aconnect() as sender:
            assert isinstance(pubsub, AsyncPubSub)
            await pubsub.listen("a", "Orders", "orders")
            assert pubsub.channels == {"a", "Orders", "orders"}
            await sender.notify("a", {"n": 1})
            await sender.notify("Orders", "upper")
            await sender.notify("orders", "multi\nline é")
            await sender.notify("not-listened", "x")
            got = await take(pubsub.events(), 3)
            assert all(isinstance(e, Event) and e.pid == sender.pid for e in got)
            return [(e.channel, e.payload) for e in got if e is not None]

    assert run(scenario) == [("a", '{"n":1}'), ("Orders", "upper"), ("orders", "multi\nline é")]


@needs_psycopg3
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_aconnect_takes_psycopg2s_keywords_as_connect_does() -> None:
    elsewhere = connections["other"].settings_dict["NAME"]

    async def scenario() -> tuple[Any, ...]:
        async with aconnect(database=elsewhere) as pubsub:
            cursor = await pubsub.conn.execute("SELECT current_database()")
            return tuple(await cursor.fetchone())

    assert run(scenario) == (elsewhere,)

    async def both() -> None:
        async with aconnect(database="a", dbname="b"):
            pass

    with pytest.raises(TypeError, match="not both"):
        run(both)


@needs_psycopg3
def test_events_yield_none_on_each_timeout_and_unlisten_drops_queued() -> None:
    async def scenario() -> None:
        async with aconnect(application_name="django_pgpubsub test") as pubsub:
            await pubsub.listen("a", "b")
            events = pubsub.events(timeout=0.05)
            assert await take(events, 2) == [None, None]
            await pubsub.notify("a", "dropped")
            await pubsub.notify("b", "kept")
            await pubsub.unlisten("a")
            assert pubsub.channels == {"b"}
            [kept] = await take(events, 1)
            assert kept is not None
            assert kept.payload == "kept"
            await pubsub.unlisten()
            await pubsub.notify("b", "after unlisten")
            assert await take(events, 1) == [None]
            assert pubsub.channels == frozenset()
            rows = await pubsub.conn.execute("SELECT current_setting('application_name')")
            assert await rows.fetchone() == ("django_pgpubsub test",)
        assert pubsub.closed

    run(scenario)


@needs_psycopg3
def test_errors_are_raised_before_any_sql() -> None:
    async def scenario() -> None:
        async with await aconnect() as pubsub:
            with pytest.raises(InvalidChannel):
                await pubsub.listen("fine", "x" * 64)
            assert pubsub.channels == frozenset()
            with pytest.raises(InvalidChannel):
                await pubsub.notify("", "x")
            with pytest.raises(PayloadTooLarge):
                await pubsub.notify("a", "x" * 8000)
            await pubsub.notify("a", "x" * 7999)  # still usable
        with pytest.raises(ImproperlyConfigured, match="No database 'nope'"):
            await aconnect("nope")
        with pytest.raises(ImproperlyConfigured, match="No database 'nope'"):
            async with aconnect("nope"):
                pass

    run(scenario)


@needs_psycopg3
def test_anotify_is_delivered_and_checks_its_arguments() -> None:
    async def scenario() -> list[str]:
        async with await aconnect() as pubsub:
            await pubsub.listen("a")
            await anotify("a", {"from": "async"})
            await anotify("a", "durable too", durable=True)
            with pytest.raises(InvalidChannel):
                await anotify("\0")
            got = await take(pubsub.events(), 1)
            return [e.payload for e in got if e is not None]

    # async_to_sync: anotify's ORM work runs in this thread, on the test database.
    assert async_to_sync(scenario)() == ['{"from":"async"}']
    assert OutboxEvent.objects.get().payload == "durable too"


@pytest.mark.skipif(is_psycopg3, reason="the psycopg 3 run tests the async API itself")
def test_with_psycopg2_every_async_entry_point_says_psycopg3_is_needed() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"aconnect\(\) needs psycopg 3"):
        run(aconnect)
    with pytest.raises(ImproperlyConfigured, match=r"anotify\(\) needs psycopg 3"):
        run(lambda: anotify("a"))


@pytest.fixture
def mixed() -> tuple[Registry, list[str]]:
    """Sync and async handlers, mixed on one channel; the async ones use the async ORM."""
    registry, calls = Registry(), []

    def sync_first(event: Event) -> None:
        calls.append(f"sync_first {event.payload}")

    async def async_second(event: Event) -> None:
        await asyncio.sleep(0)
        if event.payload == "boom":
            raise RuntimeError("async boom")
        await User.objects.acreate(username=f"async-{event.payload}")
        calls.append(f"async_second {event.payload}")

    def sync_third(event: Event) -> None:
        calls.append(f"sync_third {event.payload}")

    for function in (sync_first, async_second, sync_third):
        registry.register(function, "mixed")
    return registry, calls


def test_listener_awaits_async_handlers_in_order_and_isolates_their_errors(
    mixed: tuple[Registry, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    registry, calls = mixed

    def send(listener: Listener, reconnected: bool) -> None:
        for payload in ("1", "boom", "2"):
            notify("mixed", payload)

    assert run_listener(registry, channels=["mixed"], max_events=3, on_connect=send) == 3
    assert calls == [
        "sync_first 1",
        "async_second 1",
        "sync_third 1",
        "sync_first boom",
        "sync_third boom",
        "sync_first 2",
        "async_second 2",
        "sync_third 2",
    ]
    assert sorted(User.objects.values_list("username", flat=True)) == ["async-1", "async-2"]
    assert "Handler tests.publishing.test_async.mixed.<locals>.async_second failed" in caplog.text
    assert "RuntimeError: async boom" in caplog.text


def test_async_handlers_of_durable_events_commit_and_roll_back_with_the_event() -> None:
    registry, seen = Registry(), []

    async def durable_async(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        # Inside the claim's transaction, on the listener's connection.
        in_atomic = await sync_to_async(lambda: transaction.get_connection().in_atomic_block)()
        seen.append((event.payload, event.attempt, in_atomic))
        await User.objects.acreate(username=f"{event.payload}-{event.attempt}")
        if event.payload == "fails":
            raise RuntimeError("rolled back")

    registry.register(durable_async, "jobs")
    notify("jobs", "fails", durable=True)
    notify("jobs", "works", durable=True)
    # DURABLE_MAX_ATTEMPTS is 3 in the test settings: 3 failing attempts + 1.
    assert run_listener(registry, channels=["jobs"], max_events=4) == 4
    assert ("works", 1, True) in seen
    assert ("fails", 3, True) in seen
    assert list(User.objects.values_list("username", flat=True)) == ["works-1"]
    failed = OutboxEvent.objects.get()
    assert (failed.payload, failed.state) == ("fails", "failed")


def test_dispatch_awaits_async_handlers_too(mixed: tuple[Registry, list[str]]) -> None:
    registry, calls = mixed
    dispatch("mixed", "direct", handlers=registry)
    assert calls == ["sync_first direct", "async_second direct", "sync_third direct"]
    with pytest.raises(RuntimeError, match="async boom"):
        dispatch("mixed", "boom", handlers=registry)


@needs_psycopg3
def test_the_readmes_async_examples_run() -> None:
    readme = "\n\n\n".join(page.read_text() for page in sorted((ROOT / "docs").glob("*.rst")))
    blocks = [
        textwrap.dedent(block.split("\n\n\n")[0])
        for block in readme.split(".. code-block:: python\n")[1:]
        if "asyncio.run(" in block.split("\n\n\n")[0]
    ]
    assert blocks
    errors: list[BaseException] = []
    for block in blocks:
        # In a thread of its own, as in a script: asyncio.run() needs a thread
        # without a loop. Its ORM calls run in asgiref's sync thread, whose
        # connection is closed after.

        def target(code: str = block, errors: list[BaseException] = errors) -> None:
            try:
                exec(compile(code, "README.rst", "exec"), {})
            except BaseException as exc:
                errors.append(exc)
            finally:
                asyncio.run(sync_to_async(connections.close_all)())

        thread = threading.Thread(target=target)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "the example did not finish"
        assert not errors, errors
