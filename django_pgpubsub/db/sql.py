"""The SQL of sending (NOTIFY, storing durable events) and of reading the outbox, with its
table and wake-up channel. A leaf: it imports nothing of the package.
"""

from __future__ import annotations

OUTBOX_TABLE = "django_pgpubsub_outbox"
# The index claims read: pending rows not known to wait behind their key's head.
HEADS_INDEX = "pgpubsub_outbox_heads"
WAKEUP_CHANNEL = "django_pgpubsub.durable"

NOTIFY_SQL = "SELECT pg_notify(%s, %s)"
# unnest() of two arrays walks them side by side, in order: one round trip.
NOTIFY_MANY_SQL = "SELECT count(pg_notify(c, p)) FROM unnest(%s::text[], %s::text[]) AS t(c, p)"

# The columns every writer names (the triggers of publish_changes too): the
# others have a default or are nullable. ordering_key is named only by a
# store that has one.
_COLUMNS = (
    "channel, payload, key, sender_pid, state, attempts, created_at, available_at, last_error"
)
_ORDERED_COLUMNS = _COLUMNS.replace("key, ", "key, ordering_key, ", 1)
_VALUES = "pg_backend_pid(), 'pending', 0, now(), now(), ''"


# The sender's trace context (headers), last: NULL unless it traced the event.
def _store(*, ordered: bool) -> str:
    columns = _ORDERED_COLUMNS if ordered else _COLUMNS
    values = "%s, %s, %s, %s" if ordered else "%s, %s, %s"
    return f"""
    INSERT INTO {OUTBOX_TABLE} ({columns}, headers)
    VALUES ({values}, {_VALUES}, %s::jsonb)
    ON CONFLICT DO NOTHING"""


def _store_many(*, ordered: bool) -> str:
    columns = _ORDERED_COLUMNS if ordered else _COLUMNS
    names = "channel, payload, key, ordering_key" if ordered else "channel, payload, key"
    arrays = ", ".join(["%s::text[]"] * (4 if ordered else 3))
    # The headers, one value for every item: one send, one trace context.
    return f"""
WITH items AS (
    SELECT * FROM unnest({arrays}) WITH ORDINALITY AS t({names}, n)
), stored AS (
    INSERT INTO {OUTBOX_TABLE} ({columns}, headers)
    SELECT {names}, {_VALUES}, %s::jsonb
    FROM items ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING channel
)
"""


# One wake-up per stored event, with the channel as payload: PostgreSQL folds
# identical (channel, payload) pairs of a transaction, so a transaction that
# stores many events of one channel wakes listeners once. Parameters: channel,
# payload, key (and ordering key, for the ORDERED ones), headers.
_NOTIFY_STORED = f"SELECT count(*), count(pg_notify('{WAKEUP_CHANNEL}', channel)) FROM stored"
STORE_SQL = f"WITH stored AS ({_store(ordered=False)} RETURNING channel) {_NOTIFY_STORED}"
STORE_ORDERED_SQL = f"WITH stored AS ({_store(ordered=True)} RETURNING channel) {_NOTIFY_STORED}"
STORE_QUIET_SQL = (
    f"WITH stored AS ({_store(ordered=False)} RETURNING 1) SELECT count(*), 0 FROM stored"
)
STORE_ORDERED_QUIET_SQL = (
    f"WITH stored AS ({_store(ordered=True)} RETURNING 1) SELECT count(*), 0 FROM stored"
)

_NOTIFY_MANY_STORED = f"""
SELECT (SELECT count(*) FROM stored),
       (SELECT count(pg_notify('{WAKEUP_CHANNEL}', channel))
        FROM (SELECT DISTINCT channel FROM stored) AS c)
"""
_COUNT_MANY_STORED = "SELECT (SELECT count(*) FROM stored), 0"
STORE_MANY_SQL = _store_many(ordered=False) + _NOTIFY_MANY_STORED
STORE_MANY_ORDERED_SQL = _store_many(ordered=True) + _NOTIFY_MANY_STORED
STORE_MANY_QUIET_SQL = _store_many(ordered=False) + _COUNT_MANY_STORED
STORE_MANY_ORDERED_QUIET_SQL = _store_many(ordered=True) + _COUNT_MANY_STORED

# A listener's wake-up of the others (the payload: the channel), after it
# handled an event with an ordering key while the rest of its claim waits.
WAKE_SQL = f"SELECT 1 FROM pg_notify('{WAKEUP_CHANNEL}', %s)"

# Keys blocked by a failed attempt: an event of the key that failed (pending
# for its retry, or failed for good under ORDERING_ON_DEAD_LETTER = "block":
# the %(blockers)s states) with later events of its key waiting behind it. Their
# count, and the age of the oldest event held back (NULL when none). Read
# through the ordering indexes: the few retrying keyed rows, then one probe of
# each one's key.
BLOCKED_KEYS_SQL = f"""
SELECT count(DISTINCT h.ordering_key), extract(epoch FROM now() - min(b.created_at))::float8
FROM {OUTBOX_TABLE} AS h
CROSS JOIN LATERAL (
    SELECT b.created_at FROM {OUTBOX_TABLE} AS b
    WHERE b.ordering_key = h.ordering_key AND b.id > h.id AND b.state = 'pending'
    ORDER BY b.id LIMIT 1
) AS b
WHERE h.ordering_key IS NOT NULL AND h.attempts > 0 AND h.state IN ('pending', 'failed')
    AND h.state = ANY(%(blockers)s::text[])
"""

# "Is anything due?", every DURABLE_PROBE_INTERVAL in poll mode: an index-only
# scan of the heads index (available_at is an included column), so an idle
# outbox, or one whose pending events all wait behind their keys' heads,
# costs a few index pages.
DUE_SQL = f"""
SELECT EXISTS (
    SELECT 1 FROM {OUTBOX_TABLE}
    WHERE state = 'pending' AND channel = ANY(%s) AND available_at <= clock_timestamp()
        AND NOT behind
)
"""

# Whether the outbox is there to be swept (migrate may run after a listener starts).
OUTBOX_READY_SQL = f"SELECT to_regclass('{OUTBOX_TABLE}') IS NOT NULL"
