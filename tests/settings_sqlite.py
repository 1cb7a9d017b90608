"""The test settings with PGPUBSUB pointed at a non-PostgreSQL database (for E001)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES["lite"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
PGPUBSUB = {"DATABASE": "lite"}
