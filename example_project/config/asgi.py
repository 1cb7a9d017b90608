"""The example as an ASGI application (``make example`` serves it with uvicorn):
HTTP through Django, websockets through Channels."""

from __future__ import annotations

import os

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.core.asgi import get_asgi_application

from django_pgpubsub.asgi import cancel_on_disconnect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Sets Django up: the consumers' models can be imported after it.
django_application = get_asgi_application()

from orders.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # On Django 4.2, releases an EventStreamView's subscription when its
        # client disconnects (Django 5 does so itself; there it returns the
        # application).
        "http": cancel_on_disconnect(django_application),
        # Only pages of ALLOWED_HOSTS may open a websocket; scope["user"] is
        # the session's user, as request.user in a view.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
