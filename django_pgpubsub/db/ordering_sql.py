"""The statements that move ordering keys on where the outbox's triggers cannot: after a dead
letter (:data:`PROMOTE_SQL`), and after a lost wake-up (:data:`REPAIR_SQL`).
"""

from __future__ import annotations

from django_pgpubsub.db.sql import OUTBOX_TABLE, WAKEUP_CHANNEL

# Each key's first row that is behind, made a head unless an earlier event of
# its key is in one of the %(blocking)s states. Returns how many were promoted.
PROMOTE_SQL = """
SELECT count(django_pgpubsub_promote_v1(k, %(blocking)s::text[]))
FROM (SELECT DISTINCT k FROM unnest(%(keys)s::text[]) AS t(k)) AS keys
"""

# The repair of lost wake-ups: the keys that have rows behind, in index order
# after %(after)s, %(keys)s at most (a bounded statement: the next sweep goes
# on from the last key, and starts over once the walk reaches the end). Each
# key is one descent of the behind index to find the next (a skip scan), and
# the promotion's two probes: the cost is per key that has events waiting
# behind its head, never per event. A repaired event is one that nothing
# else would have made due: its channel's listeners are woken (%(wake)s).
# Returns the keys walked, the last one, and how many rows were promoted.
REPAIR_SQL = f"""
WITH RECURSIVE walk(k) AS (
    (SELECT ordering_key FROM {OUTBOX_TABLE}
     WHERE behind AND ordering_key > %(after)s ORDER BY ordering_key LIMIT 1)
    UNION ALL
    SELECT (SELECT o.ordering_key FROM {OUTBOX_TABLE} AS o
            WHERE o.behind AND o.ordering_key > walk.k ORDER BY o.ordering_key LIMIT 1)
    FROM walk WHERE walk.k IS NOT NULL
), keys AS MATERIALIZED (
    SELECT k FROM walk WHERE k IS NOT NULL LIMIT %(keys)s
), promoted AS MATERIALIZED (
    SELECT django_pgpubsub_promote_v1(k, %(blocking)s::text[]) AS channel FROM keys
)
SELECT (SELECT count(*) FROM keys),
    (SELECT max(k) FROM keys),
    (SELECT count(channel) FROM promoted),
    (SELECT count(pg_notify('{WAKEUP_CHANNEL}', channel)) FROM (
        SELECT DISTINCT channel FROM promoted WHERE channel IS NOT NULL AND %(wake)s
    ) AS woken)
"""
