"""Event streams (and a view of the hub's state) that the SSE tests serve with uvicorn."""

from __future__ import annotations

import asyncio

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from django_pgpubsub.hub import get_hub
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
