"""The test settings with durable wake-ups by polling (no NOTIFY from writers)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import PGPUBSUB

PGPUBSUB = {**PGPUBSUB, "DURABLE_WAKEUP": "poll", "DURABLE_PROBE_INTERVAL": 0.2}
