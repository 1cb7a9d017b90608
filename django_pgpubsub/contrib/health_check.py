"""A django-health-check plugin running the ``pubsub_health`` checks (extra ``[health]``): list
``"django_pgpubsub.contrib.health_check.PubSub"`` in a ``HealthCheckView``'s checks (version 4),
or add ``"django_pgpubsub.contrib.health_check.PubSubPlugin"`` to ``INSTALLED_APPS`` (version 3).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured
from health_check.exceptions import ServiceUnavailable

from django_pgpubsub.ops.health import check_health

# django-health-check 4's default budget of a check, which waits a second
# longer for the check's own timeout to report.
DEFAULT_TIMEOUT = datetime.timedelta(seconds=5)

try:
    from health_check.base import HealthCheck  # django-health-check 4
except ImportError:  # django-health-check 3
    from health_check.backends import HealthCheck


@dataclasses.dataclass
class PubSub(HealthCheck):  # type: ignore[misc]  # django-health-check ships no types
    """The checks of ``manage.py pubsub_health``; unavailable when one fails.

    ``timeout`` is the time the checks may take in all (a ``timedelta``, as
    django-health-check 4 has it; 5 seconds by default): what does not
    finish in time fails, on a silent server or a locked outbox, and no
    thread is left waiting on it.

    Attributes:
        using: The ``DATABASES`` alias; default the ``DATABASE`` setting.
        max_queue_usage: Highest healthy ``pg_notification_queue_usage()``.
        max_failed: Most failed durable events that are still healthy.
        max_pending_age: Seconds the oldest pending durable event may wait.
        max_blocked_age: Seconds an event held back behind a failed event of
            its ordering key may wait; None: never a failure.
        require_listener: Also require a connected ``listen_events`` process.
        channels: With ``require_listener``: one for each of these channels.
    """

    using: str | None = None
    max_queue_usage: float = 0.5
    max_failed: int = 0
    max_pending_age: float = 300.0
    max_blocked_age: float | None = None
    require_listener: bool = False
    channels: tuple[str, ...] = ()
    timeout: datetime.timedelta = DEFAULT_TIMEOUT

    def run(self) -> None:
        """Run the checks (django-health-check 4, in its executor: it is blocking).

        Raises:
            ServiceUnavailable: A check failed; the message has one part per
                failed check.
        """
        report = check_health(
            self.using,
            max_queue_usage=self.max_queue_usage,
            max_failed=self.max_failed,
            max_pending_age=self.max_pending_age,
            max_blocked_age=self.max_blocked_age,
            require_listener=self.require_listener,
            channels=self.channels,
            timeout=self.timeout.total_seconds(),
        )
        if not report.healthy:
            raise ServiceUnavailable("; ".join(report.failures()))

    def check_status(self) -> None:
        """The same, under django-health-check 3's name."""
        self.run()


class PubSubPlugin(AppConfig):
    """django-health-check 3: registers :class:`PubSub` when Django starts."""

    name = "django_pgpubsub.contrib.health_check"
    label = "pgpubsub_health_check"
    verbose_name = "django_pgpubsub health check"

    def ready(self) -> None:
        register()


def register(**options: Any) -> None:
    """Register :class:`PubSub` with django-health-check 3's plugin registry.

    Raises:
        ImproperlyConfigured: Under django-health-check 4, which has no
            registry: list the check in a ``HealthCheckView`` instead.
    """
    try:
        from health_check.plugins import plugin_dir  # noqa: PLC0415 - django-health-check 3 only
    except ImportError as exc:
        raise ImproperlyConfigured(
            "django-health-check 4 has no plugin registry: remove PubSubPlugin from "
            "INSTALLED_APPS and list 'django_pgpubsub.contrib.health_check.PubSub' in "
            "HealthCheckView.as_view(checks=[...])."
        ) from exc
    plugin_dir.register(PubSub, **options)
