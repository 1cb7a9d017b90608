"""EventStreamView as browsers meet it: hostile query strings, sessions, the
maximum age, reconnects, server shutdown, and a WSGI server. uvicorn (or
runserver) in a subprocess, httpx as the client, real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.test import Client

from scripts.pgtemp import free_port
from tests.helpers import ManagePy, database_url, run_sql, wait_until
from tests.uvicorn_server import Message, Uvicorn, messages

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not is_psycopg3, reason="the psycopg2 run tests the refusal"),
]

T = TypeVar("T")

HOSTILE = "<img src=x onerror=alert(1)>"


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
    async for message in stream:
        if message.event is not None:
            return message
    raise AssertionError("the stream ended")


async def anotify_committed(channel: str, payload: str) -> None:
    url = database_url(connection.settings_dict)
    await asyncio.to_thread(run_sql, url, "SELECT pg_notify(%s, %s)", (channel, payload))


def signed_in(username: str = "ada") -> Client:
    """A Django test client signed in as a new user: its session is in the database."""
    User.objects.create_user(username, password="secret")
    client = Client()
    assert client.login(username=username, password="secret")
    return client


def session_cookie(client: Client) -> dict[str, str]:
    return {"sessionid": client.cookies["sessionid"].value}


def test_refusals_are_plain_text_and_echo_nothing_of_the_request(server: Uvicorn) -> None:
    for path in (
        f"/events/?channel={HOSTILE}",  # not offered
        f"/events/?channel=sse.a&channel={HOSTILE}",
        "/events/?channel=sse.secret",  # refused by authorize()
        f"/events/token/?token={HOSTILE}",  # every channel refused
    ):
        response = httpx.get(server.base + path, timeout=10)
        assert response.status_code == 403, path
        assert response.headers["content-type"] == "text/plain; charset=utf-8", path
        assert response.text in (
            "A requested channel is not available.",
            "No channel is available.",
        )


@pytest.mark.parametrize("path", ["/events/signed-in/", "/events/signed-in/async/"])
def test_authorize_reads_request_user_anonymous_or_signed_in(server: Uvicorn, path: str) -> None:
    # The session and auth middleware are on (tests/settings.py).
    anonymous = httpx.get(server.base + path, timeout=10)
    assert (anonymous.status_code, anonymous.text) == (403, "No channel is available.")

    cookies = session_cookie(signed_in())
    assert httpx.get(server.base + "/whoami/", cookies=cookies, timeout=10).text == "ada"

    async def scenario() -> Message:
        async with (
            httpx.AsyncClient(base_url=server.base, cookies=cookies, timeout=10) as client,
            client.stream("GET", path) as response,
        ):
            assert response.status_code == 200
            await anotify_committed("sse.a", "for ada")
            return await next_event(messages(response))

    assert run(scenario) == Message("sse.a", "for ada")


def test_a_stream_ends_at_its_max_age_and_the_reconnect_is_authorized_afresh(
    server: Uvicorn,
) -> None:
    client = signed_in()
    cookies = session_cookie(client)

    async def until_the_end() -> list[str]:
        async with (
            httpx.AsyncClient(base_url=server.base, cookies=cookies, timeout=10) as http,
            http.stream("GET", "/events/short/") as response,  # max_age=1
        ):
            assert response.status_code == 200
            return [line async for line in response.aiter_lines()]

    # Ends by itself; it began with the id an EventSource sends back.
    lines = run(until_the_end)
    assert lines[:2] == ["id: pgpubsub", ""]

    async def reconnect() -> Message:
        async with (
            httpx.AsyncClient(base_url=server.base, cookies=cookies, timeout=10) as http,
            http.stream("GET", "/events/short/", headers={"Last-Event-ID": "pgpubsub"}) as again,
        ):
            assert again.status_code == 200
            return await next_event(messages(again))

    # What was committed between the two streams is lost: the new one says so.
    assert run(reconnect) == Message("pgpubsub.resync", '{"reason":"reconnected"}')

    client.logout()
    after_logout = httpx.get(
        server.base + "/events/short/",
        cookies=cookies,
        headers={"Last-Event-ID": "pgpubsub"},
        timeout=10,
    )
    assert after_logout.status_code == 403


def test_sigterm_ends_open_streams_and_uvicorn_exits(
    django_db_setup: None, django_db_blocker: Any
) -> None:
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    process = Uvicorn(url)  # uvicorn's default: no graceful shutdown timeout

    async def scenario() -> list[str]:
        async with (
            httpx.AsyncClient(base_url=process.base, timeout=60) as client,
            client.stream("GET", "/events/?channel=sse.a") as response,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert await anext(lines) == "id: pgpubsub"
            process.process.send_signal(signal.SIGTERM)
            # The stream ends (keepalives flow until then; no error).
            return [line async for line in lines]

    try:
        rest = run(scenario, timeout=60)
        assert all(line in ("", ": keepalive") for line in rest), rest
        process.process.wait(60)
    finally:
        process.stop()


def test_under_wsgi_runserver_a_stream_is_a_clear_error_at_once(
    django_db_setup: None, django_db_blocker: Any
) -> None:
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    address = f"127.0.0.1:{free_port()}"
    runserver = ManagePy(
        "runserver", address, "--noreload", url=url, settings="tests.settings_runserver"
    )
    try:

        def up() -> bool:
            try:
                return httpx.get(f"http://{address}/whoami/", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 60, "runserver to answer")
        response = httpx.get(f"http://{address}/events/?channel=sse.a", timeout=30)
        assert response.status_code == 500
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert "uvicorn" in response.text
        assert "manage.py runserver is WSGI" in response.text
        # Said in the server's log too, where the developer looks.
        wait_until(lambda: "streams only under an ASGI server" in runserver.output())
    finally:
        runserver.signal(signal.SIGINT)
        runserver.wait(30)
