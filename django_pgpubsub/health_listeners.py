"""The health checks' view of ``listen_events`` processes: who is connected
(``pg_stat_activity``, by ``application_name``) and for which channels (the
presence locks each listener holds, in ``pg_locks``, readable by every role;
see :mod:`django_pgpubsub.probe`)."""

from __future__ import annotations

from django_pgpubsub.bounded import BoundedReader
from django_pgpubsub.health_report import CheckResult
from django_pgpubsub.probe import APPLICATION_NAME, presence_lock_ids

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
