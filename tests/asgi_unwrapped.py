"""The test project's ASGI application without ``cancel_on_disconnect``.

What a Django 4.2 project gets when it does not wrap its application: the
SSE tests check the warning (and, on 5, that nothing is needed).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
application = get_asgi_application()
