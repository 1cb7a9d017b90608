"""How a listener proves that it still receives (a notification to itself), and shows which
channels it serves (a shared session advisory lock per channel, seen in ``pg_locks``).
"""

from __future__ import annotations

import hashlib
import time

from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.vocabulary.events import Event

# How listen_events' connections show in pg_stat_activity, for pubsub_health.
APPLICATION_NAME = "django_pgpubsub listener"
PROBE_CHANNEL_PREFIX = "django_pgpubsub.listener.liveness."
PROBE_SQL = "SELECT pg_notify(%s, '')"
PRESENCE_SQL = "SELECT count(pg_advisory_lock_shared(key)) FROM unnest(%s::bigint[]) AS key"


def presence_key(channel: str) -> int:
    """The advisory lock key (a signed 64-bit int) that advertises ``channel``.

    A hash, so that any channel name maps to a key; a prefix keeps it apart
    from keys an application derives from the same names.
    """
    digest = hashlib.blake2b(f"django_pgpubsub listener:{channel}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def presence_lock_ids(channel: str) -> tuple[int, int]:
    """``(classid, objid)`` under which ``pg_locks`` shows ``channel``'s lock."""
    key = presence_key(channel)
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


class Probe:
    """The state of the self-probe of one listening connection.

    The listener calls :meth:`start` on each new connection, :meth:`sent` once it
    sent a probe (idle for a keepalive interval), :meth:`receive` with the notifications it
    reads while a probe is out, and :meth:`check` once the probe's time is up.

    Args:
        timeout: Seconds within which a probe must come back.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.channel = ""
        self.sent_at: float | None = None
        self.answered_at = 0.0

    @property
    def waiting(self) -> bool:
        """True while a probe is out and not back."""
        return self.sent_at is not None

    def start(self, backend_pid: int) -> str:
        """Reset for a new connection; return the channel to LISTEN on.

        The channel is named after the backend, so it is private to this
        connection and a late answer from a previous connection cannot count.
        """
        self.channel = f"{PROBE_CHANNEL_PREFIX}{backend_pid}"
        self.sent_at = None
        self.answered_at = time.monotonic()
        return self.channel

    def sent(self) -> float:
        """Record that a probe went out now; return when its time is up."""
        self.sent_at = time.monotonic()
        return self.sent_at + self.timeout

    def receive(self, events: list[Event]) -> list[Event]:
        """Note an answer among ``events``; return the others."""
        channel = self.channel
        others = [event for event in events if event.channel != channel]
        if len(others) != len(events):
            self.sent_at = None
            self.answered_at = time.monotonic()
        return others

    def check(self) -> None:
        """Raise ConnectionLost when the probe that went out did not come back.

        Raises:
            ConnectionLost: The connection answers queries but no longer
                receives notifications.
        """
        if self.sent_at is None:
            return
        waited = time.monotonic() - self.sent_at
        if waited >= self.timeout:
            raise ConnectionLost(
                f"the self-probe on {self.channel!r} did not come back within "
                f"{self.timeout:g} s: the connection answers but receives no notifications"
            )
