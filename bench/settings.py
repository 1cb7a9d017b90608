"""Django settings for the benchmark processes (database from DATABASE_URL)."""

from __future__ import annotations

import dj_database_url

SECRET_KEY = "bench-only"
USE_TZ = True
INSTALLED_APPS = ["django_pgpubsub", "bench"]
DATABASES = {"default": {**dj_database_url.config()}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PGPUBSUB = {"KEEPALIVE_INTERVAL": 5.0}
ROOT_URLCONF = "bench.urls"
