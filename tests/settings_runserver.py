"""The test settings, served by ``manage.py runserver`` (DEBUG is off: hosts are named)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403

ALLOWED_HOSTS = ["127.0.0.1"]
