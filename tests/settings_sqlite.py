"""The test settings with PGPUBSUB pointed at a non-PostgreSQL database (for E001)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403

PGPUBSUB = {"DATABASE": "lite"}
