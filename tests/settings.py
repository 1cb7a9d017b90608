"""Settings for the test suite: the PostgreSQL at ``DATABASE_URL``.

They only read it: tests/plugin.py starts a throwaway server for a pytest run
and sets ``DATABASE_URL``; anything else that imports these settings (mypy's
Django plugin, scripts/docs_settings.py) starts nothing.
"""

from __future__ import annotations

import os
from typing import Any

import dj_database_url

_url = os.environ.get("DATABASE_URL", "postgresql://postgres@localhost/postgres")

SECRET_KEY = "tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "pgtrigger",
    "django_pgpubsub",
    "tests.testapp",
]
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        **dj_database_url.parse(_url),
        "ATOMIC_REQUESTS": True,
        # Persistent connections, for the tests that restart the server.
        "CONN_MAX_AGE": int(os.environ.get("TEST_CONN_MAX_AGE", "0")),
    },
    "other": {**dj_database_url.parse(_url), "NAME": "pgpubsub_other"},
    # Not PostgreSQL: for models routed elsewhere and notify(using="lite").
    "lite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
DATABASE_ROUTERS = ["tests.testapp.routers.PostgresOnly"]
ROOT_URLCONF = "tests.testapp.urls"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
PGPUBSUB: dict[str, Any] = {
    "KEEPALIVE_INTERVAL": 1.0,
    "RECONNECT_INITIAL_DELAY": 0.1,
    "RECONNECT_MAX_DELAY": 1.0,
    "DURABLE_POLL_INTERVAL": 0.5,
    "DURABLE_MAX_ATTEMPTS": 3,
    "DURABLE_RETRY_DELAY": 0.2,
    "SSE_KEEPALIVE": 0.5,
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_pgpubsub": {"handlers": ["stderr"], "level": "INFO"}},
}

# For the Channels layer's tests (tests/channels_app).
CHANNEL_LAYERS = {"default": {"BACKEND": "django_pgpubsub.layers.PubSubChannelLayer"}}
