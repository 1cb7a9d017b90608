"""The test settings with Channels installed, for ``manage.py runworker``."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "channels"]
ASGI_APPLICATION = "tests.channels_app.asgi.application"
