"""ASGI: :func:`cancel_on_disconnect` cancels a response when its client disconnects, which
Django 5 does itself and Django 4.2 does not: ``cancel_on_disconnect(get_asgi_application())``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Application = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Set (to ``True``) in the scope of every HTTP request that
#: :func:`cancel_on_disconnect` serves, so a view can tell it is in place.
SCOPE_KEY = "django_pgpubsub.cancel_on_disconnect"


def cancel_on_disconnect(application: Application) -> Application:
    """Cancel the response of an HTTP request whose client disconnects.

    Wrap the project's ASGI application with it (``asgi.py``) on Django 4.2,
    so that an ``EventStreamView`` stream is released as soon as its client
    leaves. Django 5.0 and later do this themselves: there ``application``
    is returned unchanged (a second listener would compete with Django's for
    ``receive()``).

    Args:
        application: An ASGI application, usually ``get_asgi_application()``.

    Returns:
        An ASGI application that serves every HTTP request with
        ``application`` and, once the request body is read, waits for
        ``http.disconnect`` beside it. On a disconnect the response is
        cancelled (the view sees ``asyncio.CancelledError``, as on Django 5)
        and ``request_finished`` is sent, as Django 5 does for a cancelled
        response. Other connection types (``websocket``, ``lifespan``) pass
        through untouched.
    """
    if django.VERSION >= (5, 0):
        return application
    return _CancelOnDisconnect(application)


class _CancelOnDisconnect:
    """The ASGI application :func:`cancel_on_disconnect` returns before Django 5."""

    def __init__(self, application: Application) -> None:
        self.application = application

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.application(scope, receive, send)
            return
        # Only the outermost ThreadSensitiveContext counts: Django's own one,
        # inside, then uses this one, so request_finished (sent here after a
        # cancellation) runs on the request's sync thread, where the
        # connections it closes were opened.
        async with ThreadSensitiveContext():
            await _Request(self.application, {**scope, SCOPE_KEY: True}, receive, send).serve()


class _Request:
    """One HTTP request: the application's task and, after the body, a watcher."""

    def __init__(
        self, application: Application, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self._receive = receive
        self._watcher: asyncio.Task[Message] | None = None
        self._client_left = False
        self._response = asyncio.ensure_future(application(scope, self._receive_request, send))

    async def _receive_request(self) -> Message:
        """``receive()`` as the application sees it."""
        if self._watcher is not None:
            # ASGI allows one receive() at a time, and the watcher holds it
            # now: the application gets what the watcher gets. The shield
            # keeps the application's own cancellation from reaching the
            # watcher.
            return await asyncio.shield(self._watcher)
        message = await self._receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            # The whole body is read: Django 4.2 will not call receive()
            # again, so nobody would hear the disconnect but this task.
            self._watcher = asyncio.create_task(self._watch())
        return message

    async def _watch(self) -> Message:
        message = await self._receive()
        # After the body, an ASGI server sends nothing but http.disconnect.
        if message["type"] == "http.disconnect":
            self._client_left = True
            self._response.cancel()
        return message

    async def serve(self) -> None:
        """Run the application until it returns, or until its client leaves."""
        try:
            await self._response
        except asyncio.CancelledError:
            if not self._client_left:
                raise  # the server cancelled the request itself
            # The view has seen the cancellation and cleaned up; the response
            # was never closed, so nothing sent request_finished (Django 5
            # sends it itself here, e.g. for close_old_connections).
            await sync_to_async(request_finished.send)(sender=ASGIHandler)
        finally:
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
