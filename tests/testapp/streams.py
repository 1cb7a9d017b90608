"""Event streams (and a view of the hub's state) that the SSE tests serve with uvicorn."""

from __future__ import annotations

import asyncio

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from django_pgpubsub.hub.hub import get_hub
from django_pgpubsub.views import EventStreamView


class TestStream(EventStreamView):
    """Offers three channels; an async authorize() refuses "sse.secret"."""

    channels = ("sse.a", "sse.b", "sse.secret")

    async def authorize(self, request: HttpRequest, channel: str) -> bool:
        await asyncio.sleep(0)
        return channel != "sse.secret"


class SyncAuthorized(EventStreamView):
    """A sync authorize(): only with ?token=yes."""

    channels = ("sse.a",)

    def authorize(self, request: HttpRequest, channel: str) -> bool:
        return request.GET.get("token") == "yes"


class SignedInSync(EventStreamView):
    """The README's authorize(), as a plain def: signed-in users only."""

    channels = ("sse.a",)

    def authorize(self, request: HttpRequest, channel: str) -> bool:
        return bool(request.user.is_authenticated)


class SignedInAsync(EventStreamView):
    """The same as an async def, reading the session too."""

    channels = ("sse.a",)

    async def authorize(self, request: HttpRequest, channel: str) -> bool:
        await asyncio.sleep(0)
        return bool(request.user.is_authenticated and request.session.session_key)


def whoami(request: HttpRequest) -> HttpResponse:
    """The signed-in user's name, or nothing (the tests log in through a session cookie)."""
    return HttpResponse(request.user.get_username(), content_type="text/plain")


@transaction.non_atomic_requests
async def hub_state(request: HttpRequest) -> JsonResponse:
    """What the hub of this process holds, and what its connection LISTENs to."""
    hub = get_hub()
    return JsonResponse(
        {
            "subscriptions": len(hub.subscriptions()),
            "listened": sorted(hub.listened),
            "server_channels": await hub.server_channels(),
            "pid": hub.connection.pid if hub.connection else None,
        }
    )


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>stream</title></head>
<body>
<ul id="received"></ul>
<script>
  const source = new EventSource("/events/?channel=sse.a");
  source.onopen = () => { document.body.dataset.open = "yes"; };
  for (const name of ["sse.a", "pgpubsub.resync"]) {
    source.addEventListener(name, (e) => {
      const item = document.createElement("li");
      item.textContent = `${name} ${e.data}`;
      document.getElementById("received").append(item);
    });
  }
</script>
</body></html>
"""


def stream_page(request: HttpRequest) -> HttpResponse:
    """A page that shows what its EventSource receives, for the browser test."""
    return HttpResponse(PAGE)
