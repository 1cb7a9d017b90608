"""A django-health-check plugin running the ``pubsub_health`` checks (extra ``[health]``).

List it in a ``HealthCheckView``'s checks, with the options of
:func:`django_pgpubsub.health.check_health`::

    path("ht/", HealthCheckView.as_view(checks=[
        "health_check.checks.Database",
        ("django_pgpubsub.contrib.health_check.PubSub", {"require_listener": True}),
    ])),
"""

from __future__ import annotations

import dataclasses

from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from django_pgpubsub.health import check_health


@dataclasses.dataclass
class PubSub(HealthCheck):  # type: ignore[misc]  # django-health-check ships no types
    """The checks of ``manage.py pubsub_health``; unavailable when one fails.

    Attributes:
        using: The ``DATABASES`` alias; default the ``DATABASE`` setting.
        max_queue_usage: Highest healthy ``pg_notification_queue_usage()``.
        max_failed: Most failed durable events that are still healthy.
        max_pending_age: Seconds the oldest pending durable event may wait.
        require_listener: Also require a connected ``listen_events`` process.
        channels: With ``require_listener``: one for each of these channels.
    """

    using: str | None = None
    max_queue_usage: float = 0.5
    max_failed: int = 0
    max_pending_age: float = 300.0
    require_listener: bool = False
    channels: tuple[str, ...] = ()

    def run(self) -> None:
        """Run the checks (in django-health-check's executor: it is blocking)."""
        report = check_health(
            self.using,
            max_queue_usage=self.max_queue_usage,
            max_failed=self.max_failed,
            max_pending_age=self.max_pending_age,
            require_listener=self.require_listener,
            channels=self.channels,
        )
        if not report.healthy:
            raise ServiceUnavailable("; ".join(report.failures()))
