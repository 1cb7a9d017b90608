"""Messages dropped for a full channel, logged as one line per channel per interval with
their count, from any thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

logger = logging.getLogger("django_pgpubsub.layers")

INTERVAL = 5.0  # seconds between two lines about one channel


class Drops:
    """Counts of dropped messages by channel, and when each channel was last logged.

    A channel's first drop is logged at once; the drops that follow within
    ``interval`` are counted and logged, as one line, by the first drop after
    it or by :meth:`flush`.
    """

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # channel -> drops not logged yet
        self._logged: dict[str, float] = {}  # channel -> monotonic time of its last line

    def dropped(self, channels: Iterable[str]) -> None:
        """A message was dropped for each of ``channels``, which were full."""
        lines: list[tuple[str, int, float | None]] = []
        now = time.monotonic()
        with self._lock:
            for name in channels:
                count = self._pending.get(name, 0) + 1
                last = self._logged.get(name)
                if last is None or now - last >= self.interval:
                    self._logged[name] = now
                    self._pending.pop(name, None)
                    lines.append((name, count, last))
                else:
                    self._pending[name] = count
        self._write(lines, now)

    def flush(self, *, force: bool = False) -> None:
        """Log the counts whose channel was last logged ``interval`` ago
        (every count with ``force``), and forget the channels that are quiet."""
        lines: list[tuple[str, int, float | None]] = []
        now = time.monotonic()
        with self._lock:
            for name, last in list(self._logged.items()):
                if not force and now - last < self.interval:
                    continue
                count = self._pending.pop(name, 0)
                if count:
                    self._logged[name] = now
                    lines.append((name, count, last))
                else:
                    del self._logged[name]
        self._write(lines, now)

    def _write(self, lines: list[tuple[str, int, float | None]], now: float) -> None:
        for name, count, last in lines:
            if last is None or count == 1:
                logger.warning("Channel %r is full: a message to it was dropped.", name)
            else:
                logger.warning(
                    "Channel %r is full: %d messages to it were dropped in the last %.0f s.",
                    name,
                    count,
                    now - last,
                )


DROPS = Drops()
