"""HTTP through the test project, websockets (``/ws/``) and the worker channel
"thumbnails" through Channels."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

http = get_asgi_application()

from tests.channels_app.consumers import EveryoneConsumer, ThumbnailWorker  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http,
        "websocket": URLRouter([path("ws/", EveryoneConsumer.as_asgi())]),
        "channel": ChannelNameRouter({"thumbnails": ThumbnailWorker.as_asgi()}),
    }
)
