"""System checks for configuration mistakes."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from django_pgpubsub import conf
from django_pgpubsub.db.connection import database_wrapper


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """django_pgpubsub.E002: every PGPUBSUB setting must be known and valid."""
    return [checks.Error(problem, id="django_pgpubsub.E002") for problem in conf.problems()]


@checks.register(checks.Tags.compatibility)
def check_databases(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """django_pgpubsub.E001: the configured databases must be PostgreSQL."""
    try:
        aliases = {conf.database(), conf.listener_database()}
    except ImproperlyConfigured:
        return []  # reported by check_settings
    errors: list[checks.CheckMessage] = []
    for alias in sorted(aliases):
        try:
            database_wrapper(alias)
        except ImproperlyConfigured as exc:
            errors.append(
                checks.Error(
                    str(exc),
                    hint="Point PGPUBSUB['DATABASE'] (and LISTENER_DATABASE) at a "
                    "PostgreSQL alias of settings.DATABASES.",
                    id="django_pgpubsub.E001",
                )
            )
    return errors
