"""App configuration: handler discovery and system checks at start-up."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from django_pgpubsub import conf


def autodiscover() -> None:
    """Import the ``AUTODISCOVER_MODULES`` (default ``pubsub``) of every installed app.

    An app without such a module is skipped; an error raised while importing
    one that exists propagates, so a broken handler module is never silently
    ignored.
    """
    autodiscover_modules(*conf.autodiscover_modules())


def register_checks() -> None:
    """Register the system checks (importing the module registers them)."""
    from django_pgpubsub import checks  # noqa: F401, PLC0415


class PubSubConfig(AppConfig):
    name = "django_pgpubsub"
    verbose_name = "PostgreSQL pub/sub"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        register_checks()
        autodiscover()
