"""EventStreamView served by uvicorn in a subprocess, driven by httpx; real PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import django
import httpx
import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from tests.helpers import database_url, run_sql, wait_until
from tests.uvicorn_server import Message, Uvicorn, messages

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not is_psycopg3, reason="the psycopg2 run tests the refusal"),
]

T = TypeVar("T")


@pytest.fixture(scope="module")
def server(django_db_setup: None, django_db_blocker: Any) -> Iterator[Uvicorn]:
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    process = Uvicorn(url)
    yield process
    process.stop()


def run(scenario: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), timeout))


async def next_event(stream: AsyncIterator[Message]) -> Message:
    """The next event, skipping keepalive comments."""
    async for message in stream:
        if message.event is not None:
            return message
    raise AssertionError("the stream ended")


def db_url() -> str:
    return database_url(connection.settings_dict)


def hub_backends() -> list[tuple[int, str]]:
    """The server's connections of this library (a fresh connection: safe in async code)."""
    rows = run_sql(
        db_url(),
        "SELECT pid, application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE 'django_pgpubsub%%'",
    )
    return [(int(pid), str(name)) for pid, name in rows]


async def anotify_committed(channel: str, payload: str) -> None:
    """NOTIFY from another connection, committed at once."""
    await asyncio.to_thread(run_sql, db_url(), "SELECT pg_notify(%s, %s)", (channel, payload))


def hub_state(server: Uvicorn) -> dict[str, Any]:
    """What the server's hub holds (tests/testapp/streams.py: hub_state)."""
    result: dict[str, Any] = httpx.get(server.base + "/hub/", timeout=10).json()
    return result


def idle(server: Uvicorn) -> bool:
    """No subscriber, and nothing LISTENed on the hub's connection."""
    state = hub_state(server)
    return (state["subscriptions"], state["server_channels"], state["listened"]) == (0, [], [])


async def stream_then_leave(server: Uvicorn, path: str, subscriptions: int = 1) -> None:
    """Open a stream, see the hub hold it (``subscriptions`` in all), and disconnect."""
    async with (
        httpx.AsyncClient(base_url=server.base, timeout=10) as client,
        client.stream("GET", path) as response,
    ):
        assert response.status_code == 200
        state = (await client.get("/hub/")).json()
        assert (state["subscriptions"], state["server_channels"]) == (subscriptions, ["sse.b"])


def test_an_event_reaches_a_streaming_client_with_the_sse_headers(server: Uvicorn) -> None:
    async def scenario() -> Message:
        async with (
            httpx.AsyncClient(base_url=server.base, timeout=10) as client,
            client.stream("GET", "/events/?channel=sse.a") as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            # Listening before the headers: committed now, it arrives.
            await anotify_committed("sse.a", "hello")
            return await next_event(messages(response))

    assert run(scenario) == Message("sse.a", "hello")


def test_403_before_streaming_for_refused_and_unoffered_channels(server: Uvicorn) -> None:
    def status(path: str) -> int:
        return httpx.get(server.base + path, timeout=10).status_code

    assert status("/events/?channel=sse.secret") == 403  # refused by async authorize()
    assert status("/events/?channel=sse.a&channel=nope") == 403  # not offered
    assert status("/events/token/") == 403  # refused by sync authorize()
    assert status("/events/plain/?channel=sse.b") == 403  # not offered by that view


def test_without_channel_every_allowed_channel_streams(server: Uvicorn) -> None:
    async def scenario() -> list[Message]:
        async with (
            httpx.AsyncClient(base_url=server.base, timeout=10) as client,
            client.stream("GET", "/events/") as response,
        ):
            stream = messages(response)
            await anotify_committed("sse.secret", "not for you")
            await anotify_committed("sse.b", "b")
            await anotify_committed("sse.a", "a")
            return [await next_event(stream), await next_event(stream)]

    assert run(scenario) == [Message("sse.b", "b"), Message("sse.a", "a")]


def test_sync_authorize_and_the_default_view(server: Uvicorn) -> None:
    async def scenario() -> list[Message]:
        async with (
            httpx.AsyncClient(base_url=server.base, timeout=10) as client,
            AsyncExitStack() as stack,
        ):
            token = await stack.enter_async_context(
                client.stream("GET", "/events/token/?token=yes")
            )
            plain = await stack.enter_async_context(client.stream("GET", "/events/plain/"))
            assert (token.status_code, plain.status_code) == (200, 200)
            await anotify_committed("sse.a", "both")
            return [await next_event(messages(r)) for r in (token, plain)]

    assert run(scenario) == [Message("sse.a", "both")] * 2


def test_multi_line_payloads_arrive_intact_and_keepalives_flow(server: Uvicorn) -> None:
    payload = "line 1\nline 2\n\n  indented: yes\nlast"

    async def scenario() -> tuple[Message, Message]:
        async with (
            httpx.AsyncClient(base_url=server.base, timeout=10) as client,
            client.stream("GET", "/events/?channel=sse.b") as response,
        ):
            stream = messages(response)
            await anotify_committed("sse.b", payload)
            event = await next_event(stream)
            # SSE_KEEPALIVE is 0.5 s in the test settings.
            keepalive = await anext(stream)
            return event, keepalive

    event, keepalive = run(scenario)
    assert event == Message("sse.b", payload)
    assert keepalive == Message(None, "keepalive")


def test_a_terminated_hub_connection_resyncs_the_client_then_delivers(server: Uvicorn) -> None:
    async def scenario() -> list[Message]:
        async with (
            httpx.AsyncClient(base_url=server.base, timeout=10) as client,
            client.stream("GET", "/events/?channel=sse.a") as response,
        ):
            stream = messages(response)
            [(pid, name)] = hub_backends()
            assert name == "django_pgpubsub hub"
            run_sql(
                database_url(connection.settings_dict),
                "SELECT pg_terminate_backend(%s)",
                (pid,),
            )
            resync = await next_event(stream)
            await anotify_committed("sse.a", "after")
            return [resync, await next_event(stream)]

    resync, after = run(scenario)
    assert resync == Message("pgpubsub.resync", '{"reason":"reconnected"}')
    assert after == Message("sse.a", "after")


def test_200_clients_share_one_connection_and_are_released(server: Uvicorn) -> None:
    clients = 200

    async def scenario() -> list[Message]:
        limits = httpx.Limits(max_connections=clients + 10)
        async with (
            httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits) as client,
            AsyncExitStack() as stack,
        ):
            responses = await asyncio.gather(
                *(
                    stack.enter_async_context(client.stream("GET", "/events/?channel=sse.a"))
                    for _ in range(clients)
                )
            )
            assert {r.status_code for r in responses} == {200}
            # One LISTEN connection for the whole server process.
            backends = await asyncio.to_thread(hub_backends)
            assert [name for _, name in backends] == ["django_pgpubsub hub"]
            state = (await client.get("/hub/")).json()
            assert state["subscriptions"] == clients
            await anotify_committed("sse.a", "to everyone")
            return await asyncio.gather(*(next_event(messages(r)) for r in responses))

    received = run(scenario, timeout=60)
    assert received == [Message("sse.a", "to everyone")] * clients

    # Disconnected: no subscriber, and nothing LISTENed on the hub's connection.
    wait_until(lambda: idle(server), 10, "the hub to release every client")


def test_a_client_that_disconnects_is_released_at_once(server: Uvicorn) -> None:
    # On Django 4.2 too: tests/asgi.py wraps the application with
    # cancel_on_disconnect().
    wait_until(lambda: idle(server), 10, "the earlier tests' clients to be released")
    run(lambda: stream_then_leave(server, "/events/?channel=sse.b"))
    wait_until(lambda: idle(server), 10, "the hub to release the client")
    assert "cancel_on_disconnect" not in server.output()


@pytest.fixture
def unwrapped(django_db_setup: None, django_db_blocker: Any) -> Iterator[Uvicorn]:
    """The test project served without cancel_on_disconnect()."""
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    process = Uvicorn(url, app="tests.asgi_unwrapped:application")
    yield process
    process.stop()


@pytest.mark.skipif(django.VERSION >= (5, 0), reason="Django 5 cancels the response itself")
def test_on_django_4_2_without_the_wrapper_a_warning_says_streams_outlive_clients(
    unwrapped: Uvicorn,
) -> None:
    warning = "Wrap the ASGI application with django_pgpubsub.asgi.cancel_on_disconnect()"
    for held in (1, 2):  # the first client's subscription is still there
        run(functools.partial(stream_then_leave, unwrapped, "/events/?channel=sse.b", held))
        wait_until(lambda: warning in unwrapped.output(), 10, "the warning")

    async def notify_and_wait() -> None:
        # Both streams write an event and keepalives (every 0.5 s) to their
        # closed connections; uvicorn drops them without a word.
        await anotify_committed("sse.b", "to nobody")
        await asyncio.sleep(1.5)

    run(notify_and_wait)
    state = hub_state(unwrapped)
    assert (state["subscriptions"], state["server_channels"]) == (2, ["sse.b"])
    assert unwrapped.output().count(warning) == 1  # once per process

    # SIGTERM still ends them (and uvicorn's graceful shutdown with them).
    unwrapped.process.terminate()
    unwrapped.process.wait(30)


@pytest.mark.skipif(django.VERSION < (5, 0), reason="Django 4.2 needs the wrapper")
def test_on_django_5_an_unwrapped_application_releases_streams_without_a_warning(
    unwrapped: Uvicorn,
) -> None:
    run(lambda: stream_then_leave(unwrapped, "/events/?channel=sse.b"))
    wait_until(lambda: idle(unwrapped), 10, "the hub to release the client")
    assert "cancel_on_disconnect" not in unwrapped.output()
