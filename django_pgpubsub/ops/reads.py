"""Bounded reads for health checks and metrics: a connect timeout, statement and lock timeouts,
and a thread waited for no longer than the deadline, so that none waits on a sick database.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django.db import DatabaseError

from django_pgpubsub.db.connection import dedicated_wrapper

T = TypeVar("T")

#: Seconds a health check or a metrics refresh may take, unless told otherwise.
DEFAULT_TIMEOUT = 10.0
# What the caller waits beyond the deadline for the statement that the
# server cancelled to come back with its error.
GRACE = 0.5
# libpq waits at least 2 s to connect, whatever connect_timeout says.
MIN_CONNECT_TIMEOUT = 2
# A connection whose server went silent fails within about 10 s.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
APPLICATION_NAME = "django_pgpubsub health"
TIMEOUTS_SQL = (
    "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)"
)


class TimedOut(DatabaseError):
    """A read did not finish before its deadline."""


def validate_timeout(timeout: float) -> float:
    """Return ``timeout`` as a float.

    Raises:
        ValueError: It is not a positive, finite number of seconds.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"timeout must be a number of seconds, not {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


class BoundedReader:
    """A dedicated connection whose every read ends by ``deadline``.

    Made and used in one thread (:func:`run_bounded`'s).

    Args:
        using: The ``DATABASES`` alias.
        deadline: ``time.monotonic()`` value by which everything must be done.
    """

    def __init__(self, using: str, deadline: float) -> None:
        self.using = using
        self.deadline = deadline
        connect_timeout = max(MIN_CONNECT_TIMEOUT, math.ceil(self.remaining()))
        self._wrapper = dedicated_wrapper(
            using,
            # Overrides the alias's OPTIONS: a longer one there would unbound us.
            options={"connect_timeout": connect_timeout},
            default_options={"application_name": APPLICATION_NAME, **KEEPALIVES},
        )

    def remaining(self) -> float:
        """Seconds left before the deadline (0 when it has passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def connect(self) -> None:
        """Open the connection (Django's errors, such as ``OperationalError``).

        Raises:
            TimedOut: The deadline passed while connecting.
        """
        try:
            self._wrapper.ensure_connection()
        except DatabaseError as exc:
            # libpq counts connect_timeout in whole seconds of the wall
            # clock: its "timeout expired" may come up to a second early.
            if not self.remaining() or "timeout expired" in str(exc):
                raise TimedOut(f"no answer within the time allowed ({exc})") from exc
            raise

    def fetch(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one read-only statement, bounded by the time left; return its rows.

        Raises:
            TimedOut: No time is left, or the server cancelled the statement
                (statement or lock timeout).
            DatabaseError: Any other failure.
        """
        milliseconds = math.floor(self.remaining() * 1000)
        if milliseconds < 1:
            raise TimedOut("not run: no time left")
        # The lock timeout fires first, so that its error names the cause.
        timeouts = (f"{milliseconds}ms", f"{max(1, milliseconds * 4 // 5)}ms")
        with self._wrapper.cursor() as cursor:
            cursor.execute("BEGIN READ ONLY")
            try:
                cursor.execute(TIMEOUTS_SQL, timeouts)
                cursor.execute(sql, params)
                rows: list[tuple[Any, ...]] = cursor.fetchall()
            except DatabaseError as exc:
                with contextlib.suppress(DatabaseError):  # the connection may be gone
                    cursor.execute("ROLLBACK")
                # 57014 query_canceled, 55P03 lock_not_available.
                code = getattr(exc.__cause__, "sqlstate", None) or getattr(
                    exc.__cause__, "pgcode", None
                )
                if code in ("57014", "55P03"):
                    raise TimedOut(str(exc).strip().splitlines()[0]) from exc
                raise
            cursor.execute("COMMIT")
        return rows

    def close(self) -> None:
        """Close the connection (nothing happens when it never opened)."""
        self._wrapper.close()


class _Outcome(Generic[T]):
    __slots__ = ("error", "result")

    def __init__(self) -> None:
        self.result: T | None = None
        self.error: BaseException | None = None


def run_bounded(using: str, timeout: float, work: Callable[[BoundedReader], T], *, name: str) -> T:
    """Call ``work`` with a :class:`BoundedReader` of ``using`` in a thread of
    its own; wait for it at most ``timeout`` seconds (and :data:`GRACE`).

    Args:
        using: The ``DATABASES`` alias.
        timeout: Seconds everything may take.
        work: Reads through the reader it is given; may leave results behind
            for the caller as it goes, for when it does not finish.
        name: The thread's name.

    Returns:
        What ``work`` returned.

    Raises:
        TimedOut: ``work`` did not finish in time (it carries on in its
            thread, and ends on its own).
        Exception: What ``work`` raised.
    """
    deadline = time.monotonic() + validate_timeout(timeout)
    outcome: _Outcome[T] = _Outcome()

    def target() -> None:
        reader = None
        try:
            reader = BoundedReader(using, deadline)
            outcome.result = work(reader)
        except BaseException as exc:  # handed to the waiting thread
            outcome.error = exc
        finally:
            if reader is not None:
                reader.close()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout + GRACE)
    if thread.is_alive():
        raise TimedOut(f"did not finish within {timeout:g} s")
    if outcome.error is not None:
        raise outcome.error
    return outcome.result  # type: ignore[return-value]
