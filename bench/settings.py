"""Django settings for the benchmark processes (database from DATABASE_URL)."""

from __future__ import annotations

import os

import dj_database_url

SECRET_KEY = "bench-only"
USE_TZ = True
INSTALLED_APPS = ["django_pgpubsub", "bench"]
DATABASES = {"default": {**dj_database_url.config()}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PGPUBSUB = {
    "KEEPALIVE_INTERVAL": 5.0,
    # bench/wakeup.py runs listeners in each durable wake-up mode.
    "DURABLE_WAKEUP": os.environ.get("BENCH_DURABLE_WAKEUP", "notify"),
    "DURABLE_PROBE_INTERVAL": float(os.environ.get("BENCH_PROBE_INTERVAL", "0.5")),
}
ROOT_URLCONF = "bench.urls"
