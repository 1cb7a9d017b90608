"""Server-Sent Events: ``EventStreamView.as_view(channels=[...])`` streams channels to
browsers, every client of a process on the hub's one LISTEN connection.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import django
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils.decorators import classonlymethod
from django.utils.functional import LazyObject, empty
from django.views import View

from django_pgpubsub import conf
from django_pgpubsub.asgi import SCOPE_KEY
from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.hub.hub import get_hub
from django_pgpubsub.hub.sse import (
    KEEPALIVE,
    EventStream,
    end_streams_at_shutdown,
    format_event,
    stopping,
)

__all__ = ["KEEPALIVE", "EventStream", "EventStreamView", "format_event"]

logger = logging.getLogger("django_pgpubsub.views")

NEEDS_ASGI = (
    "EventStreamView streams only under an ASGI server; this request came through "
    "WSGI (manage.py runserver is WSGI). Serve the project with uvicorn "
    "(uvicorn yourproject.asgi:application) or daphne (add 'daphne' to INSTALLED_APPS "
    "and its runserver is ASGI)."
)


def plain(message: str, status: int, **headers: str) -> HttpResponse:
    """A fixed message as ``text/plain``: never request input, never HTML."""
    return HttpResponse(
        message, status=status, content_type="text/plain; charset=utf-8", headers=headers
    )


def check_channels(channels: object, where: str) -> None:
    """Refuse a ``str`` (or nothing iterable) where channel names are expected.

    Raises:
        ImproperlyConfigured: ``channels`` is a ``str`` or not a sequence.
    """
    if isinstance(channels, str):
        raise ImproperlyConfigured(
            f"{where}: channels must be a list of channel names, not the str {channels!r} "
            f"(which would offer each letter). Write [{channels!r}]."
        )
    if not isinstance(channels, Iterable):
        raise ImproperlyConfigured(f"{where}: channels must be a list of channel names.")


async def resolve_user(request: HttpRequest) -> None:
    """Load ``request.user`` in a thread if it is still lazy.

    ``AuthenticationMiddleware`` sets a lazy ``request.user`` whose first use
    queries the session and the user tables: from async code that raises
    ``SynchronousOnlyOperation``. Loaded here, it (and the session it read)
    can then be used from an ``async def authorize``.
    """
    user = getattr(request, "user", None)
    if isinstance(user, LazyObject) and user._wrapped is empty:
        await sync_to_async(user._setup)()


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
    Refusals are ``text/plain`` with a fixed message: nothing of the request
    is echoed.

    On Django 4.2, serve it through
    :func:`django_pgpubsub.asgi.cancel_on_disconnect`, or a stream outlives
    its client (a warning says so, once per process).

    Attributes:
        channels: The channels offered (a list or tuple of names, not a ``str``).
        using: The ``DATABASES`` alias to listen on; default ``LISTENER_DATABASE``.
        max_age: Seconds after which a stream ends (the browser reconnects,
            and is authorized afresh); default the ``SSE_MAX_AGE`` setting.
    """

    channels: Sequence[str] = ()
    using: str | None = None
    max_age: float | None = None
    http_method_names = ["get"]  # noqa: RUF012 - View declares it so

    @classonlymethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., Any]:
        check_channels(initkwargs.get("channels", cls.channels), f"{cls.__name__}.as_view()")
        view = super().as_view(**initkwargs)
        # Django refuses ATOMIC_REQUESTS on async views; a stream holds no
        # transaction anyway.
        for alias in connections:
            view = transaction.non_atomic_requests(using=alias)(view)
        return view

    def authorize(self, request: HttpRequest, channel: str) -> bool | Awaitable[bool]:
        """Whether ``request`` may receive ``channel``. Default: yes.

        Either kind works, and ``request.user`` and ``request.session`` are
        usable in both: a plain ``def`` runs in a thread (as Django runs sync
        code for async views), and before an ``async def`` is called the
        lazy ``request.user`` is loaded in a thread.
        """
        return True

    async def _authorized(self, request: HttpRequest, channels: list[str]) -> list[str]:
        """Those of ``channels`` that :meth:`authorize` allows, in order."""
        authorize = self.authorize
        if getattr(authorize, "__func__", None) is EventStreamView.authorize:
            return channels  # the default: no thread hop, no user to load
        if iscoroutinefunction(authorize):
            await resolve_user(request)
            return [c for c in channels if await _allowed(authorize(request, c))]
        # A plain def: one thread hop for all the channels.
        results = await sync_to_async(lambda: [authorize(request, c) for c in channels])()
        return [c for c, result in zip(channels, results, strict=True) if await _allowed(result)]

    async def _choose(self, request: HttpRequest) -> list[str] | HttpResponse:
        """The channels to stream, or the refusal."""
        offered = list(self.channels)
        requested = request.GET.getlist("channel")
        if not requested:
            chosen = await self._authorized(request, offered)
            return chosen or plain("No channel is available.", 403)
        chosen = list(dict.fromkeys(requested))
        if any(channel not in offered for channel in chosen) or (
            await self._authorized(request, chosen) != chosen
        ):
            return plain("A requested channel is not available.", 403)
        return chosen

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        check_channels(self.channels, type(self).__name__)
        if not self.channels:
            raise ImproperlyConfigured(f"{type(self).__name__} offers no channels.")
        hub = get_hub(self.using)  # says so if Django uses psycopg2
        if not hasattr(request, "scope"):
            logger.error(NEEDS_ASGI)
            return plain(NEEDS_ASGI, 500)
        if stopping():
            return plain("The server is stopping.", 503, **{"Retry-After": "1"})
        chosen = await self._choose(request)
        if isinstance(chosen, HttpResponse):
            return chosen
        try:
            # Listening before the headers go out: what commits after, arrives.
            subscription = await hub.subscribe(chosen)
        except ConnectionLost:
            return plain("Database unavailable.", 503, **{"Retry-After": "5"})
        if django.VERSION < (5, 0) and not request.scope.get(SCOPE_KEY):
            _warn_streams_outlive_clients()
        end_streams_at_shutdown()
        max_age = self.max_age if self.max_age is not None else conf.sse_max_age()
        stream = EventStream(
            subscription,
            conf.sse_keepalive(),
            max_age=max_age,
            # A browser that reconnects sends back the id the stream began with:
            # events committed between the two streams were missed.
            resync="Last-Event-ID" in request.headers,
        )
        response = StreamingHttpResponse(stream, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


async def _allowed(result: bool | Awaitable[bool]) -> bool:
    if inspect.isawaitable(result):
        result = await result
    return bool(result)
