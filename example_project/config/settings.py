"""Settings of the example project. The database comes from DATABASE_URL."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

if not os.environ.get("DATABASE_URL"):
    raise ImproperlyConfigured(
        "Set DATABASE_URL (postgresql://user:password@host:port/name), "
        "or start the example with `make example`, which provides one."
    )

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_pgpubsub",
    "orders",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "config.urls"
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
DATABASES = {"default": dj_database_url.config(conn_max_age=60, conn_health_checks=True)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

# Channels' layer on PostgreSQL (no Redis): the websockets' group messages
# go through the process's one LISTEN connection, sent at commit. "resync"
# tells the consumers when messages may have been missed (OrderStatusConsumer).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "django_pgpubsub.layers.PubSubChannelLayer",
        "CONFIG": {"capacity": 100, "expiry": 60, "resync": True},
    }
}

# Every django_pgpubsub setting, at its default, for show.
PGPUBSUB = {
    "DATABASE": "default",
    "LISTENER_DATABASE": None,
    "AUTODISCOVER_MODULES": ["pubsub"],
    "KEEPALIVE_INTERVAL": 5.0,
    "RECONNECT_INITIAL_DELAY": 0.25,
    "RECONNECT_MAX_DELAY": 30.0,
    "RECONNECT_MAX_ATTEMPTS": None,
}
