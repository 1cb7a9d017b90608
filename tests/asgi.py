"""The test project as an ASGI application, for uvicorn in the SSE tests."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from django_pgpubsub.asgi import cancel_on_disconnect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
# On Django 4.2, releases an EventStreamView's subscription when its client
# disconnects (Django 5 does so itself; there it returns the application).
application = cancel_on_disconnect(get_asgi_application())
