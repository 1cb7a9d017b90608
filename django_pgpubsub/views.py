"""Server-Sent Events: ``EventStreamView`` streams channels to browsers.

Every client of every ``EventStreamView`` of a process shares the hub's one
LISTEN connection (:mod:`django_pgpubsub.streams.hub`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import django
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseForbidden,
    StreamingHttpResponse,
)
from django.utils.decorators import classonlymethod
from django.views import View

from django_pgpubsub import conf
from django_pgpubsub.asgi import SCOPE_KEY
from django_pgpubsub.events import Event
from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.streams.hub import get_hub
from django_pgpubsub.streams.subscription import Subscription

logger = logging.getLogger("django_pgpubsub.views")

KEEPALIVE = b": keepalive\n\n"
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")  # the SSE spec's three line endings


# Every client of a channel is sent the same event object: it is formatted
# once, not once per client (equal events format alike).
@functools.lru_cache(maxsize=256)
def format_event(event: Event) -> bytes:
    """``event: <channel>``, one ``data:`` line per payload line, a blank line."""
    data = "".join(f"data: {line}\n" for line in _LINE_BREAKS.split(event.payload))
    return f"event: {event.channel}\n{data}\n".encode()


class EventStream:
    """The body of an event stream; Django calls :meth:`close` when the response ends."""

    def __init__(self, subscription: Subscription, keepalive: float) -> None:
        self.subscription = subscription
        self.keepalive = keepalive
        # A response cancelled before its body starts (the client left while
        # middleware ran, or while the headers went out) is never iterated
        # nor closed: the subscription is released when the stream is dropped.
        weakref.finalize(self, subscription.close)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._generate()

    async def _generate(self) -> AsyncIterator[bytes]:
        try:
            async for event in self.subscription.events(timeout=self.keepalive):
                yield KEEPALIVE if event is None else format_event(event)
        finally:
            # When the client disconnects, Django 5 (or cancel_on_disconnect()
            # on 4.2) cancels the response: CancelledError lands here.
            # close() covers the other endings.
            self.close()

    def close(self) -> None:
        self.subscription.close()


@functools.cache
def _warn_streams_outlive_clients() -> None:
    """Once per process: before Django 5, nothing ends a stream whose client left."""
    logger.warning(
        "Django %s does not cancel a streaming response when its client disconnects: "
        "each EventStreamView subscription is held until the server stops. Wrap the "
        "ASGI application with django_pgpubsub.asgi.cancel_on_disconnect() in asgi.py.",
        django.get_version(),
    )


class EventStreamView(View):
    """An async view streaming channels as Server-Sent Events (needs ASGI).

    Configure with ``EventStreamView.as_view(channels=[...])`` or a subclass.
    ``?channel=NAME`` (repeatable) picks a subset; a channel not offered, or
    refused by :meth:`authorize`, is answered 403 before any streaming.
    Without it, every offered channel that :meth:`authorize` allows.

    On Django 4.2, serve it through
    :func:`django_pgpubsub.asgi.cancel_on_disconnect`, or a stream outlives
    its client (a warning says so, once per process).

    Attributes:
        channels: The channels offered.
        using: The ``DATABASES`` alias to listen on; default ``LISTENER_DATABASE``.
    """

    channels: Sequence[str] = ()
    using: str | None = None
    http_method_names = ["get"]  # noqa: RUF012 - View declares it so

    @classonlymethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., Any]:
        view = super().as_view(**initkwargs)
        # Django refuses ATOMIC_REQUESTS on async views; a stream holds no
        # transaction anyway.
        for alias in connections:
            view = transaction.non_atomic_requests(using=alias)(view)
        return view

    def authorize(self, request: HttpRequest, channel: str) -> bool | Awaitable[bool]:
        """Whether ``request`` may receive ``channel`` (sync or async). Default: yes."""
        return True

    async def _allowed(self, request: HttpRequest, channel: str) -> bool:
        allowed = self.authorize(request, channel)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        return bool(allowed)

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        offered = list(self.channels)
        if not offered:
            raise ImproperlyConfigured(f"{type(self).__name__} offers no channels.")
        requested = request.GET.getlist("channel")
        if requested:
            chosen = list(dict.fromkeys(requested))
            for channel in chosen:
                if channel not in offered or not await self._allowed(request, channel):
                    return HttpResponseForbidden(f"Channel {channel!r} is not available.")
        else:
            chosen = [channel for channel in offered if await self._allowed(request, channel)]
            if not chosen:
                return HttpResponseForbidden("No channel is available.")
        try:
            # Listening before the headers go out: what commits after, arrives.
            subscription = await get_hub(self.using).subscribe(chosen)
        except ConnectionLost:
            return HttpResponse("Database unavailable.", status=503, headers={"Retry-After": "5"})
        if django.VERSION < (5, 0) and not getattr(request, "scope", {}).get(SCOPE_KEY):
            _warn_streams_outlive_clients()
        response = StreamingHttpResponse(
            EventStream(subscription, conf.sse_keepalive()), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
