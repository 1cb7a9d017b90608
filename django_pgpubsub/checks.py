"""System checks for configuration mistakes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from django_pgpubsub import conf
from django_pgpubsub.connection import database_wrapper

_SETTINGS: tuple[Callable[[], object], ...] = (
    conf.check_names,
    conf.database,
    conf.listener_database,
    conf.autodiscover_modules,
    conf.keepalive_interval,
    conf.reconnect_initial_delay,
    conf.reconnect_max_delay,
    conf.reconnect_max_attempts,
    conf.durable_poll_interval,
    conf.durable_batch_size,
    conf.durable_max_attempts,
    conf.durable_retry_delay,
    conf.durable_retry_max_delay,
    conf.durable_lease,
)


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """django_pgpubsub.E002: every PGPUBSUB setting must be valid."""
    errors: list[checks.CheckMessage] = []
    for accessor in _SETTINGS:
        try:
            accessor()
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), id="django_pgpubsub.E002"))
            break  # an unknown key or a non-dict fails every accessor alike
    return errors


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
