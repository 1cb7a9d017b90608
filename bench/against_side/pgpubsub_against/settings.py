"""The measured tree's ``bench.settings`` with this app added."""

from __future__ import annotations

from bench.settings import *  # noqa: F403
from bench.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "pgpubsub_against"]
