"""A websocket consumer that joins the group "everyone" and says who it is, and a worker
consumer of the normal channel "thumbnails" (``manage.py runworker thumbnails``)."""

from __future__ import annotations

import os
from typing import Any

from channels.consumer import SyncConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer


class EveryoneConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    """Sends ``{"channel_name", "pid"}`` on connect, then each ``relay`` message's ``data``."""

    async def connect(self) -> None:
        await self.channel_layer.group_add("everyone", self.channel_name)
        await self.accept()
        await self.send_json({"channel_name": self.channel_name, "pid": os.getpid()})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard("everyone", self.channel_name)

    async def relay(self, event: dict[str, Any]) -> None:
        await self.send_json(event["data"])


class ThumbnailWorker(SyncConsumer):  # type: ignore[misc]  # channels is untyped
    """Prints ``handled <n> <pid>`` for each ``thumbnail.make`` message."""

    def thumbnail_make(self, message: dict[str, Any]) -> None:
        print(f"handled {message['n']} {os.getpid()}", flush=True)
