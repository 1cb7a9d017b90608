"""Periodic work for the listener's loop (keepalives, durable sweeps), on the monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Callable


class Periodic:
    """A function that the loop runs every ``interval`` seconds.

    Attributes:
        name: What it does, for logs and tests.
        interval: Seconds between runs.
        due: ``time.monotonic()`` value at which it runs next.
    """

    __slots__ = ("due", "function", "interval", "name")

    def __init__(self, name: str, interval: float, function: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self.function = function
        self.due = time.monotonic() + interval

    def postpone(self, now: float) -> None:
        """Start the interval again from ``now`` (e.g. traffic proved what it checks)."""
        self.due = now + self.interval

    def __repr__(self) -> str:
        return f"<Periodic {self.name} every {self.interval} s>"


class Schedule:
    """The loop's periodic tasks."""

    def __init__(self) -> None:
        self.tasks: list[Periodic] = []

    def every(self, name: str, interval: float, function: Callable[[], object]) -> Periodic:
        """Run ``function`` every ``interval`` seconds from now on; return its task."""
        task = Periodic(name, interval, function)
        self.tasks.append(task)
        return task

    def run_due(self, now: float) -> None:
        """Run every task that is due at ``now``, each at most once.

        A task's next run is set before it runs, so one that raises (a lost
        connection) is not run again at once after the loop recovers.
        """
        for task in self.tasks:
            if task.due <= now:
                task.postpone(now)
                task.function()

    def timeout(self, now: float) -> float | None:
        """Seconds from ``now`` until the next task is due; ``None`` with no task."""
        if not self.tasks:
            return None
        return max(0.0, min(task.due for task in self.tasks) - now)
