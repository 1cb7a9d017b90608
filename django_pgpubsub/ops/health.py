"""Health checks for orchestrators, run by ``manage.py pubsub_health`` and the
django-health-check plugin: each reads one thing from PostgreSQL, bounded,
and gives a :class:`CheckResult` in a :class:`HealthReport`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from django_pgpubsub import conf
from django_pgpubsub.db.connection import database_wrapper
from django_pgpubsub.db.sql import BLOCKED_KEYS_SQL, OUTBOX_TABLE
from django_pgpubsub.listener.liveness import APPLICATION_NAME, presence_lock_ids
from django_pgpubsub.ops.reads import (
    DEFAULT_TIMEOUT,
    BoundedReader,
    TimedOut,
    run_bounded,
    validate_timeout,
)
from django_pgpubsub.vocabulary.channel_names import validate_channels


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        ok: Whether it passed.
        value: What was measured (JSON-serialisable).
        detail: What was measured and against what limit, in words.
        warning: Passed, but ``detail`` says what deserves a look.
    """

    ok: bool
    value: Any
    detail: str
    warning: bool = False


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

    def warnings(self) -> list[str]:
        """One line per passed check with a warning: ``warning: name: detail``."""
        return [
            f"warning: {name}: {check.detail}"
            for name, check in self.checks.items()
            if check.ok and check.warning
        ]

    def summary(self) -> str:
        """The line that closes a healthy report: ``healthy:`` and the checks
        that passed cleanly, then ``; warning:`` and those that passed with a
        warning, if any."""
        passed = [name for name, check in self.checks.items() if check.ok and not check.warning]
        warned = [name for name, check in self.checks.items() if check.ok and check.warning]
        line = f"healthy: {', '.join(passed)}"
        return f"{line}; warning: {', '.join(warned)}" if warned else line

    def as_dict(self) -> dict[str, Any]:
        """``{"healthy": bool, "checks": {name: {"ok", "warning", "value", "detail"}}}``."""
        return {
            "healthy": self.healthy,
            "checks": {
                name: {
                    "ok": check.ok,
                    "warning": check.warning,
                    "value": check.value,
                    "detail": check.detail,
                }
                for name, check in self.checks.items()
            },
        }


def queue_usage_check(usage: float, limit: float) -> CheckResult:
    text = f"notification queue {usage:.2%} full"
    if usage > limit:
        return CheckResult(False, usage, f"{text}, above the limit of {limit:.2%}")
    return CheckResult(True, usage, f"{text} (limit {limit:.2%})")


def failed_events_check(failed: int, limit: int) -> CheckResult:
    if failed > limit:
        return CheckResult(
            False,
            failed,
            f"{failed} failed durable event(s), {failed - limit} more than the {limit} "
            "allowed; see `manage.py durable_events`",
        )
    return CheckResult(True, failed, f"{failed} failed durable event(s) (limit {limit})")


def oldest_pending_check(age: float | None, limit: float) -> CheckResult:
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


def unhandled_channels_check(channels: list[str], require_listener: bool) -> CheckResult:
    if not channels:
        return CheckResult(True, [], "every channel with pending durable events has a listener")
    detail = (
        f"pending durable events on channel(s) {channels} that no running listen_events "
        "handles: they wait until one does"
    )
    return CheckResult(not require_listener, channels, detail, warning=True)


def blocked_keys_check(keys: int, oldest: float | None, limit: float | None) -> CheckResult:
    """Ordering keys held back by a failed attempt: a warning, or a failure once
    the oldest event waiting behind one is older than ``limit`` seconds."""
    value = {"keys": keys, "oldest_seconds": oldest}
    if not keys or oldest is None:
        return CheckResult(True, value, "no ordering key is blocked by a failed attempt")
    detail = (
        f"{keys} ordering key(s) blocked by a failed attempt; the oldest event held back "
        f"waits for {oldest:.0f} s"
    )
    if limit is not None and oldest > limit:
        return CheckResult(False, value, f"{detail}, over the limit of {limit:g} s")
    return CheckResult(True, value, f"{detail}; see `manage.py durable_events`", warning=True)


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

# The presence locks held in this database (pg_locks: readable by every role).
PRESENCE_LOCKS_SQL = """
SELECT DISTINCT l.classid::bigint, l.objid::bigint FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def presence(reader: BoundedReader) -> set[tuple[int, int]]:
    return {(int(classid), int(objid)) for classid, objid in reader.fetch(PRESENCE_LOCKS_SQL)}


def listeners_check(reader: BoundedReader, alias: str, channels: list[str]) -> CheckResult:
    if not channels:
        [(count,)] = reader.fetch(LISTENERS_SQL, (APPLICATION_NAME,))
        count = int(count)
        if not count:
            return CheckResult(
                False, 0, f"no listen_events process is connected to {alias!r}'s database"
            )
        return CheckResult(True, count, f"{count} listen_events process(es) connected")
    counts: dict[str, int] = {}
    for channel in channels:
        classid, objid = presence_lock_ids(channel)
        [(count,)] = reader.fetch(CHANNEL_LISTENERS_SQL, (APPLICATION_NAME, classid, objid))
        counts[channel] = int(count)
    missing = [channel for channel, count in counts.items() if not count]
    if missing:
        return CheckResult(
            False, counts, f"no listen_events process listens on channel(s) {missing}"
        )
    return CheckResult(True, counts, f"every channel has a listener: {counts}")


QUEUE_SQL = "SELECT pg_notification_queue_usage(), to_regclass(%s) IS NOT NULL"

# Each channel with pending events, and how old its first one is: a skip scan
# of the pending index (channel, id), one probe per channel, never the
# backlog's rows.
PENDING_CHANNELS_SQL = f"""
WITH RECURSIVE channels(channel) AS (
    (SELECT channel FROM {OUTBOX_TABLE} WHERE state = 'pending' ORDER BY channel LIMIT 1)
    UNION ALL
    SELECT (SELECT o.channel FROM {OUTBOX_TABLE} o
            WHERE o.state = 'pending' AND o.channel > c.channel ORDER BY o.channel LIMIT 1)
    FROM channels c WHERE c.channel IS NOT NULL
)
SELECT c.channel, extract(epoch FROM now() - first.created_at)
FROM channels c CROSS JOIN LATERAL (
    SELECT o.created_at FROM {OUTBOX_TABLE} o
    WHERE o.state = 'pending' AND o.channel = c.channel ORDER BY o.id LIMIT 1
) AS first
WHERE c.channel IS NOT NULL
"""

FAILED_SQL = f"SELECT count(*) FROM {OUTBOX_TABLE} WHERE state = 'failed'"


def check_health(
    using: str | None = None,
    *,
    max_queue_usage: float = 0.5,
    max_failed: int = 0,
    max_pending_age: float = 300.0,
    max_blocked_age: float | None = None,
    require_listener: bool = False,
    channels: Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> HealthReport:
    """Run the checks against the database ``using`` (default: the ``DATABASE`` setting).

    On a dedicated connection, each statement in its own read-only
    transaction, everything within ``timeout`` seconds (see
    :mod:`django_pgpubsub.ops.reads`): a check that cannot finish in time, on a
    silent server or a locked table, fails with a line that says so.

    Args:
        using: The ``DATABASES`` alias.
        max_queue_usage: Highest healthy ``pg_notification_queue_usage()`` (0..1).
        max_failed: Most failed durable events that are still healthy.
        max_pending_age: Seconds the oldest pending durable event may wait.
        max_blocked_age: Seconds the oldest event held back behind a failed
            event of its ordering key may wait; None: a blocked key is a
            warning, never a failure.
        require_listener: Also require a connected ``listen_events`` process,
            and one for every channel with pending durable events.
        channels: With ``require_listener``: one for each of these channels.
        timeout: Seconds the whole run may take.

    Returns:
        The report. An unreachable database is a failed ``database`` check,
        never an exception; the checks that need it are then left out.

    Raises:
        ImproperlyConfigured: ``using`` is not a PostgreSQL alias.
        ValueError: ``timeout`` is not a positive number of seconds.
        InvalidChannel: A name in ``channels`` is unusable.
    """
    alias = using or conf.database()
    database_wrapper(alias)  # ImproperlyConfigured for an unknown alias or not PostgreSQL
    timeout = validate_timeout(timeout)
    wanted = sorted(set(validate_channels(channels)))
    limits = _Limits(
        max_queue_usage, max_failed, max_pending_age, max_blocked_age, require_listener, wanted
    )
    found = _Found()
    # When it times out, what was found in time is in found; the rest failed.
    with contextlib.suppress(TimedOut):
        run_bounded(
            alias,
            timeout,
            lambda reader: _run_checks(reader, alias, limits, found),
            name="pgpubsub-health",
        )
    checks = dict(found.checks)  # the thread may still add to found
    if "database" not in checks:
        within = f"no answer within {timeout:g} s"
        checks = {"database": CheckResult(False, False, f"cannot reach {alias!r}: {within}")}
    elif checks["database"].ok:
        for name in _expected(limits, found.has_outbox):
            if name not in checks:
                checks[name] = CheckResult(False, None, f"did not finish within {timeout:g} s")
    return HealthReport({name: checks[name] for name in ORDER if name in checks})


ORDER = (
    "database",
    "queue_usage",
    "failed_events",
    "oldest_pending",
    "blocked_keys",
    "unhandled_channels",
    "listener",
)


@dataclass(frozen=True)
class _Limits:
    max_queue_usage: float
    max_failed: int
    max_pending_age: float
    max_blocked_age: float | None
    require_listener: bool
    channels: list[str]


class _Found:
    """What the checks' thread found so far."""

    def __init__(self) -> None:
        self.checks: dict[str, CheckResult] = {}
        self.has_outbox = True


def _expected(limits: _Limits, has_outbox: bool) -> list[str]:
    names = ["queue_usage"]
    if has_outbox:
        names += ["failed_events", "oldest_pending", "blocked_keys", "unhandled_channels"]
    if limits.require_listener:
        names.append("listener")
    return names


def _run_checks(reader: BoundedReader, alias: str, limits: _Limits, progress: _Found) -> None:
    """Fill ``found`` as the checks pass or fail, so that whatever finished in
    time is reported when the rest does not.

    The checks of the outbox come last: a locked outbox must not keep the
    others from running.
    """
    found = progress.checks
    try:
        reader.connect()
    except TimedOut:
        return  # reported by check_health
    except DatabaseError as exc:
        found["database"] = CheckResult(False, False, f"cannot reach {alias!r}: {_line(exc)}")
        return
    try:
        [(usage, has_outbox)] = reader.fetch(QUEUE_SQL, (OUTBOX_TABLE,))
    except DatabaseError as exc:
        found["database"] = CheckResult(False, False, f"{alias!r} does not answer: {_line(exc)}")
        return
    found["database"] = CheckResult(True, True, f"{alias!r} answers")
    progress.has_outbox = bool(has_outbox)
    found["queue_usage"] = queue_usage_check(float(usage), limits.max_queue_usage)
    try:
        presence_locks = presence(reader)
        if limits.require_listener:
            found["listener"] = listeners_check(reader, alias, limits.channels)
    except DatabaseError as exc:
        for name in _expected(limits, progress.has_outbox):
            found.setdefault(name, CheckResult(False, None, f"cannot check: {_line(exc)}"))
        return
    if has_outbox:
        _outbox_checks(reader, limits, presence_locks, found)
    else:
        missing = f"no {OUTBOX_TABLE} table: run `manage.py migrate django_pgpubsub`"
        for name in ("failed_events", "oldest_pending", "blocked_keys"):
            found[name] = CheckResult(False, None, missing)


def _outbox_checks(
    reader: BoundedReader,
    limits: _Limits,
    presence_locks: set[tuple[int, int]],
    found: dict[str, CheckResult],
) -> None:
    """The checks of the durable outbox, each statement on its own."""
    try:
        pending = reader.fetch(PENDING_CHANNELS_SQL)
    except DatabaseError as exc:
        line = _why(exc)
        found["oldest_pending"] = CheckResult(False, None, line)
        found["unhandled_channels"] = CheckResult(False, None, line)
    else:
        ages = [float(age) for _, age in pending if age is not None]
        oldest = round(max(ages), 3) if ages else None
        found["oldest_pending"] = oldest_pending_check(oldest, limits.max_pending_age)
        unhandled = sorted(
            channel for channel, _ in pending if presence_lock_ids(channel) not in presence_locks
        )
        found["unhandled_channels"] = unhandled_channels_check(unhandled, limits.require_listener)
    try:
        [(failed,)] = reader.fetch(FAILED_SQL)
    except DatabaseError as exc:
        found["failed_events"] = CheckResult(False, None, _why(exc))
    else:
        found["failed_events"] = failed_events_check(int(failed), limits.max_failed)
    try:
        [(keys, waiting)] = reader.fetch(
            BLOCKED_KEYS_SQL, {"blockers": conf.ordering_blocker_states()}
        )
    except DatabaseError as exc:
        found["blocked_keys"] = CheckResult(False, None, _why(exc))
    else:
        age = None if waiting is None else round(float(waiting), 3)
        found["blocked_keys"] = blocked_keys_check(int(keys), age, limits.max_blocked_age)


def unhandled_channels(using: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """The channels with pending durable events that no running ``listen_events``
    handles (none holds the channel's presence lock), sorted.

    Raises:
        ImproperlyConfigured: ``using`` is not a PostgreSQL alias.
        DatabaseError: The database could not tell within ``timeout`` seconds
            (:class:`~django_pgpubsub.ops.reads.TimedOut`), or failed.
    """
    alias = using or conf.database()
    database_wrapper(alias)

    def read(reader: BoundedReader) -> list[str]:
        reader.connect()
        presence_locks = presence(reader)
        pending = reader.fetch(PENDING_CHANNELS_SQL)
        return sorted(
            channel for channel, _ in pending if presence_lock_ids(channel) not in presence_locks
        )

    return run_bounded(alias, timeout, read, name="pgpubsub-unhandled")


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _why(exc: DatabaseError) -> str:
    if isinstance(exc, TimedOut):
        return f"did not finish in the time allowed ({_line(exc)})"
    return f"cannot check: {_line(exc)}"


__all__ = ["CheckResult", "HealthReport", "check_health", "unhandled_channels"]
