"""The live status of one order, over a websocket, through the channel layer."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from orders.models import Order


class OrderStatusConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    """Joins the order's group, sends its status, then each change of it.

    The group's messages come from ``announce_status`` (orders/signals.py),
    at the commit of the transaction that saved the order.
    """

    async def connect(self) -> None:
        self.pk = int(self.scope["url_route"]["kwargs"]["pk"])
        self.group = Order.group_name(self.pk)
        # Join first, then read: a change committed after the read arrives
        # through the group, one committed before it is in the read.
        await self.channel_layer.group_add(self.group, self.channel_name)
        status = await self.current_status()
        if status is None:
            await self.close()  # no such order: the handshake is refused
            return
        await self.accept()
        await self.send_json({"status": status})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def order_status(self, event: dict[str, Any]) -> None:
        """A ``{"type": "order.status"}`` message sent to the group."""
        await self.send_json({"status": event["status"]})

    async def pgpubsub_resync(self, event: dict[str, Any]) -> None:
        """The layer's connection to PostgreSQL was re-established (CONFIG
        ``"resync": True``): changes may have been missed, send the status afresh."""
        status = await self.current_status()
        if status is not None:
            await self.send_json({"status": status})

    async def current_status(self) -> str | None:
        """The order's status now; ``None`` once it is gone."""
        status: str | None = await database_sync_to_async(self.read_status)()
        return status

    def read_status(self) -> str | None:
        order = Order.objects.filter(pk=self.pk).only("status").first()
        return None if order is None else order.status
