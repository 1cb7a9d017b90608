"""cancel_on_disconnect(): what it does around an ASGI application, on scripted
requests (tests/hub/test_sse.py serves the real thing with uvicorn).

The wrapper itself is what ``cancel_on_disconnect`` returns before Django 5;
it is tested on every version, since only Django decides whether to use it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import django
import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.asgi import get_asgi_application
from django.core.signals import request_finished

from django_pgpubsub.asgi import (
    SCOPE_KEY,
    Application,
    Message,
    Receive,
    Scope,
    Send,
    _CancelOnDisconnect,
    cancel_on_disconnect,
)
from django_pgpubsub.views import _warn_streams_outlive_clients
from tests.helpers import ROOT

T = TypeVar("T")

REQUEST: Scope = {"type": "http", "method": "GET", "path": "/events/"}
DISCONNECT: Message = {"type": "http.disconnect"}


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 10))


class Client:
    """The server's side of one request: messages for receive(), a record of send()."""

    def __init__(self, *messages: Message) -> None:
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        for message in messages:
            self.messages.put_nowait(message)
        self.sent: list[Message] = []
        self.receives = 0
        self.waiting = 0  # receive() calls in progress: ASGI allows one
        self.most_waiting = 0

    async def receive(self) -> Message:
        self.receives += 1
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            return await self.messages.get()
        finally:
            self.waiting -= 1

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self.messages.put_nowait(DISCONNECT)


class Stream:
    """An application that reads the body as Django 4.2 does, then streams until cancelled."""

    def __init__(self) -> None:
        self.body = b""
        self.scope: Scope = {}
        self.streaming = asyncio.Event()
        self.cancelled = False
        self.thread: int | None = None  # the request's sync thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        # Django 4.2 opens its own context; the wrapper's, outside, must win.
        async with ThreadSensitiveContext():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                self.body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            self.thread = await sync_to_async(threading.get_ident)()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            self.streaming.set()
            try:
                await asyncio.Event().wait()  # no event ever comes
            except asyncio.CancelledError:
                self.cancelled = True
                raise


@pytest.fixture
def finished() -> Iterator[list[int]]:
    """The thread of each request_finished signal sent meanwhile."""
    threads: list[int] = []

    def record(**kwargs: Any) -> None:
        threads.append(threading.get_ident())

    request_finished.connect(record)
    yield threads
    request_finished.disconnect(record)


@pytest.mark.skipif(django.VERSION < (5, 0), reason="Django 4.2 needs the wrapper")
def test_on_django_5_the_application_is_returned_unchanged() -> None:
    application = get_asgi_application()
    assert cancel_on_disconnect(application) is application


@pytest.mark.skipif(django.VERSION >= (5, 0), reason="Django 5 listens for disconnects itself")
def test_on_django_4_2_the_application_is_wrapped() -> None:
    application = get_asgi_application()
    assert isinstance(cancel_on_disconnect(application), _CancelOnDisconnect)


def test_a_disconnect_after_the_body_cancels_the_response(finished: list[int]) -> None:
    stream = Stream()
    client = Client({"type": "http.request", "body": b"x", "more_body": False})

    async def scenario() -> None:
        served = asyncio.create_task(
            _CancelOnDisconnect(stream)(REQUEST, client.receive, client.send)
        )
        await stream.streaming.wait()
        client.leave()
        await served  # returns: the cancellation is not an error, as on Django 5

    run(scenario)
    assert stream.cancelled
    # Sent once, on the thread where the request ran its sync code: that is
    # where close_old_connections finds the request's connections.
    assert finished == [stream.thread]
    assert client.most_waiting == 1


def test_the_body_is_read_whole_before_the_watcher_starts(finished: list[int]) -> None:
    stream = Stream()
    client = Client(
        {"type": "http.request", "body": b"a", "more_body": True},
        {"type": "http.request", "body": b"b", "more_body": True},
        {"type": "http.request", "body": b"c"},
    )

    async def scenario() -> None:
        served = asyncio.create_task(
            _CancelOnDisconnect(stream)(REQUEST, client.receive, client.send)
        )
        await stream.streaming.wait()
        await asyncio.sleep(0)  # the watcher's turn
        assert client.waiting == 1  # the watcher, from the last chunk on
        client.leave()
        await served

    run(scenario)
    assert (stream.body, stream.cancelled, client.receives, client.most_waiting) == (
        b"abc",
        True,
        4,
        1,
    )


def test_a_response_that_ends_by_itself_stops_the_watcher(finished: list[int]) -> None:
    client = Client({"type": "http.request"})

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async def scenario() -> None:
        await _CancelOnDisconnect(respond)(REQUEST, client.receive, client.send)

    run(scenario)
    assert [message["type"] for message in client.sent] == [
        "http.response.start",
        "http.response.body",
    ]
    assert (client.receives, client.waiting) == (2, 0)  # the watcher's receive() was cancelled
    assert finished == []  # the response sends it itself when it closes


def test_a_disconnect_during_the_body_goes_to_the_application(finished: list[int]) -> None:
    stream = Stream()
    client = Client({"type": "http.request", "body": b"a", "more_body": True}, DISCONNECT)

    run(lambda: _CancelOnDisconnect(stream)(REQUEST, client.receive, client.send))
    # Django 4.2 answers nothing then; no watcher was started.
    assert (stream.body, stream.cancelled, client.receives, client.sent) == (b"a", False, 2, [])
    assert finished == []


def test_an_application_reading_after_the_body_shares_the_watchers_message() -> None:
    client = Client({"type": "http.request"})
    seen: list[Message] = []

    async def listens_itself(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        client.leave()
        seen.append(await receive())

    run(lambda: _CancelOnDisconnect(listens_itself)(REQUEST, client.receive, client.send))
    # One receive() at a time reached the server; the disconnect cancelled
    # the application, waiting in receive() like any other response.
    assert (client.receives, client.most_waiting, seen) == (2, 1, [])


def test_an_error_of_the_application_is_raised_and_stops_the_watcher() -> None:
    client = Client({"type": "http.request"})

    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.sleep(0)  # the watcher is waiting on receive()
        raise RuntimeError("view failed")

    with pytest.raises(RuntimeError, match="view failed"):
        run(lambda: _CancelOnDisconnect(fails)(REQUEST, client.receive, client.send))
    assert client.waiting == 0


def test_the_server_cancelling_the_request_is_not_swallowed(finished: list[int]) -> None:
    stream = Stream()
    client = Client({"type": "http.request"})

    async def scenario() -> None:
        served = asyncio.create_task(
            _CancelOnDisconnect(stream)(REQUEST, client.receive, client.send)
        )
        await stream.streaming.wait()
        served.cancel()
        with pytest.raises(asyncio.CancelledError):
            await served

    run(scenario)
    assert stream.cancelled
    assert (client.waiting, finished) == (0, [])


def test_the_scope_is_marked_for_http_and_other_types_pass_through() -> None:
    seen: list[Scope] = []

    async def record(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    wrapped: Application = _CancelOnDisconnect(record)
    lifespan: Scope = {"type": "lifespan"}
    client = Client()
    run(lambda: wrapped(lifespan, client.receive, client.send))
    run(lambda: wrapped(REQUEST, client.receive, client.send))
    assert seen[0] is lifespan
    assert seen[1] == {**REQUEST, SCOPE_KEY: True}
    assert SCOPE_KEY not in REQUEST  # the server's scope is left as it was
    assert client.receives == 0


def test_the_readmes_asgi_py_is_the_examples() -> None:
    readme = (ROOT / "docs" / "streams.rst").read_text()
    lines = readme.split("    # asgi.py\n", 1)[1].splitlines()
    block = itertools.takewhile(lambda line: not line or line.startswith("    "), lines)
    code = "\n".join(line.removeprefix("    ") for line in block)
    example = (ROOT / "example_project" / "config" / "asgi.py").read_text()
    assert code.strip() == example.split("from __future__ import annotations\n", 1)[1].strip()


def test_the_views_warning_names_the_wrapper_once(caplog: pytest.LogCaptureFixture) -> None:
    # EventStreamView calls it for each stream on Django 4.2 without the
    # wrapper (tests/hub/test_sse.py sees it in uvicorn's output).
    _warn_streams_outlive_clients.cache_clear()
    _warn_streams_outlive_clients()
    _warn_streams_outlive_clients()
    [record] = caplog.records
    assert (record.name, record.levelname) == ("django_pgpubsub.views", "WARNING")
    assert "django_pgpubsub.asgi.cancel_on_disconnect()" in record.getMessage()
