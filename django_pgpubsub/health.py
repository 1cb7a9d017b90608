"""Health checks for orchestrators: ``manage.py pubsub_health`` and the
django-health-check plugin run these.

Each check reads one thing from PostgreSQL (no table is written): whether the
database answers, how full the notification queue is, the durable outbox's
failed and oldest pending events, and which ``listen_events`` processes are
connected (by ``application_name``) and for which channels (by the advisory
locks each listener holds, see :mod:`django_pgpubsub.probe`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connections

from django_pgpubsub import conf
from django_pgpubsub.channels import validate_channels
from django_pgpubsub.db.connection import database_wrapper
from django_pgpubsub.db.sql import OUTBOX_TABLE
from django_pgpubsub.probe import APPLICATION_NAME, presence_lock_ids

QUEUE_SQL = "SELECT pg_notification_queue_usage(), to_regclass(%s) IS NOT NULL"

OUTBOX_SQL = f"""
SELECT count(*) FILTER (WHERE state = 'failed'),
       extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'pending'))
FROM {OUTBOX_TABLE}
"""

LISTENERS_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE application_name = %s AND datname = current_database()
"""

CHANNEL_LISTENERS_SQL = """
SELECT count(DISTINCT a.pid) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
WHERE a.application_name = %s AND a.datname = current_database()
  AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = %s AND l.objid::bigint = %s
"""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        ok: Whether it passed.
        value: What was measured (JSON-serialisable).
        detail: What was measured and against what limit, in words.
    """

    ok: bool
    value: Any
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """Every check's result, by name, in the order they ran."""

    checks: dict[str, CheckResult] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """True when every check passed."""
        return all(check.ok for check in self.checks.values())

    def failures(self) -> list[str]:
        """One line per failed check: ``name: detail``."""
        return [f"{name}: {check.detail}" for name, check in self.checks.items() if not check.ok]

    def as_dict(self) -> dict[str, Any]:
        """``{"healthy": bool, "checks": {name: {"ok", "value", "detail"}}}``."""
        return {
            "healthy": self.healthy,
            "checks": {
                name: {"ok": check.ok, "value": check.value, "detail": check.detail}
                for name, check in self.checks.items()
            },
        }


def check_health(
    using: str | None = None,
    *,
    max_queue_usage: float = 0.5,
    max_failed: int = 0,
    max_pending_age: float = 300.0,
    require_listener: bool = False,
    channels: Iterable[str] = (),
) -> HealthReport:
    """Run the checks against the database ``using`` (default: the ``DATABASE`` setting).

    Args:
        using: The ``DATABASES`` alias.
        max_queue_usage: Highest healthy ``pg_notification_queue_usage()`` (0..1).
        max_failed: Most failed durable events that are still healthy.
        max_pending_age: Seconds the oldest pending durable event may wait.
        require_listener: Also require a connected ``listen_events`` process.
        channels: With ``require_listener``: one for each of these channels.

    Returns:
        The report. An unreachable database is a failed ``database`` check,
        never an exception; the checks that need it are then left out.
    """
    alias = using or conf.database()
    database_wrapper(alias)  # ImproperlyConfigured for an unknown alias or not PostgreSQL
    wanted = sorted(set(validate_channels(channels)))
    checks: dict[str, CheckResult] = {}
    connection = connections[alias]
    opened_here = connection.connection is None
    try:
        with connection.cursor() as cursor:
            cursor.execute(QUEUE_SQL, (OUTBOX_TABLE,))
            usage, has_outbox = cursor.fetchone()
            checks["database"] = CheckResult(True, True, f"{alias!r} answers")
            checks["queue_usage"] = _queue_usage(float(usage), max_queue_usage)
            if has_outbox:
                cursor.execute(OUTBOX_SQL)
                failed, oldest = cursor.fetchone()
                checks["failed_events"] = _failed(int(failed), max_failed)
                age = None if oldest is None else round(float(oldest), 3)
                checks["oldest_pending"] = _oldest_pending(age, max_pending_age)
            else:
                missing = f"no {OUTBOX_TABLE} table: run `manage.py migrate django_pgpubsub`"
                checks["failed_events"] = CheckResult(False, None, missing)
                checks["oldest_pending"] = CheckResult(False, None, missing)
            if require_listener:
                checks["listener"] = _listeners(cursor, alias, wanted)
    except DatabaseError as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        checks = {"database": CheckResult(False, False, f"cannot reach {alias!r}: {first_line}")}
    finally:
        # A probe must not leave a connection open that it opened, but must
        # not close one that a caller's transaction uses.
        if opened_here and not connection.in_atomic_block:
            connection.close()
    return HealthReport(checks)


def _queue_usage(usage: float, limit: float) -> CheckResult:
    text = f"notification queue {usage:.2%} full"
    if usage > limit:
        return CheckResult(False, usage, f"{text}, above the limit of {limit:.2%}")
    return CheckResult(True, usage, f"{text} (limit {limit:.2%})")


def _failed(failed: int, limit: int) -> CheckResult:
    if failed > limit:
        return CheckResult(
            False,
            failed,
            f"{failed} failed durable event(s), {failed - limit} more than the {limit} "
            "allowed; see `manage.py durable_events`",
        )
    return CheckResult(True, failed, f"{failed} failed durable event(s) (limit {limit})")


def _oldest_pending(age: float | None, limit: float) -> CheckResult:
    if age is None:
        return CheckResult(True, None, "no pending durable event")
    if age > limit:
        return CheckResult(
            False,
            age,
            f"the oldest pending durable event is {age:.0f} s old, {age - limit:.0f} s "
            f"over the limit of {limit:g} s",
        )
    return CheckResult(True, age, f"the oldest pending durable event is {age:.0f} s old")


def _listeners(cursor: Any, alias: str, channels: list[str]) -> CheckResult:
    if not channels:
        cursor.execute(LISTENERS_SQL, (APPLICATION_NAME,))
        count = int(cursor.fetchone()[0])
        if not count:
            return CheckResult(
                False, 0, f"no listen_events process is connected to {alias!r}'s database"
            )
        return CheckResult(True, count, f"{count} listen_events process(es) connected")
    counts: dict[str, int] = {}
    for channel in channels:
        classid, objid = presence_lock_ids(channel)
        cursor.execute(CHANNEL_LISTENERS_SQL, (APPLICATION_NAME, classid, objid))
        counts[channel] = int(cursor.fetchone()[0])
    missing = [channel for channel, count in counts.items() if not count]
    if missing:
        return CheckResult(
            False, counts, f"no listen_events process listens on channel(s) {missing}"
        )
    return CheckResult(True, counts, f"every channel has a listener: {counts}")
