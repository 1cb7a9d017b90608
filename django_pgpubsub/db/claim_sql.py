"""The statements of a listener's claims on the outbox: claim, start and finish a group,
isolate, renew, release, recover.
"""

from __future__ import annotations

from django_pgpubsub.db.sql import OUTBOX_TABLE

# Where a claim is held, for people (durable_events status, the admin): this
# backend since this time. Behind a transaction pooler the pid is a pooled
# server connection's, so liveness never reads it: see HOLD_SQL below.
_HOLDER = "claimed_pid = pg_backend_pid(), claimed_at = clock_timestamp()"

# Taken once per listening connection, with a fresh random key; released by
# PostgreSQL when the session ends. The key is a bigint: pg_locks shows its
# high half as classid and its low half as objid, with objsubid 1.
HOLD_SQL = "SELECT pg_advisory_lock(%s)"

_LEASE = "clock_timestamp() + %(lease)s * interval '1 second'"

_UNCLAIM = """
    claim_token = NULL, claimed_pid = NULL, claimed_by = NULL, claimed_at = NULL,
    lease_expires_at = NULL, started_at = NULL, holder_key = NULL
"""

# Ordering keys: a keyed event ``e`` may be claimed only at the head of its
# key's line. No earlier event of its key is in one of the %(blocking)s states
# (pending, running, and failed when ORDERING_ON_DEAD_LETTER is "block"): an
# earlier event waiting for its retry time blocks its own key only, and the
# key's later events never jump ahead of it. And no event of its key is
# running, so a dead letter retried by an operator (a lower id) never runs
# beside the key's current head. Both probes read the small indexes on
# keyed rows; events without a key skip them. One claim takes at
# most one event per key: the second one's predecessor is pending in its
# snapshot. Two claims cannot both start a key's events: a head is locked by
# the first (SKIP LOCKED), and its successors see it pending or running until
# its deletion (or dead letter) commits.
_AT_HEAD = f"""(e.ordering_key IS NULL OR (
    NOT EXISTS (
        SELECT 1 FROM {OUTBOX_TABLE} AS k
        WHERE k.ordering_key = e.ordering_key AND k.id < e.id
            AND k.state = ANY(%(blocking)s::text[])
    ) AND NOT EXISTS (
        SELECT 1 FROM {OUTBOX_TABLE} AS r
        WHERE r.ordering_key = e.ordering_key AND r.state = 'running'
    )))"""

# Due events of the listener's channels, oldest first. One index range scan
# per channel, so pending rows of other channels, however many, cost nothing,
# and a large backlog is read from its head only. The scan reads the heads
# index, which leaves out the events known to wait behind their key's head
# (``behind``): with a deep backlog over a few keys, the rows it meets are the
# keys' heads, not every pending row probed by _AT_HEAD. The flag is a hint,
# never trusted: _AT_HEAD still checks each row. The claim starts the
# first event's attempt in the same statement, and returns that event's
# payload alone: the others' are read when their turn comes (when they are
# started), so a claim of large payloads is never held in memory at once.
CLAIM_SQL = f"""
WITH picked AS (
    SELECT due.id FROM unnest(%(channels)s::text[]) AS c(channel)
    CROSS JOIN LATERAL (
        SELECT id FROM {OUTBOX_TABLE} AS e
        WHERE state = 'pending' AND channel = c.channel AND available_at <= clock_timestamp()
            AND NOT e.behind AND {_AT_HEAD}
            AND (%(only)s::bigint[] IS NULL OR e.id = ANY(%(only)s::bigint[]))
        ORDER BY id LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS due
    ORDER BY due.id LIMIT %(limit)s
), first AS MATERIALIZED (
    SELECT min(id) AS id FROM picked
)
UPDATE {OUTBOX_TABLE} AS o SET
    state = 'running',
    claim_token = %(token)s,
    {_HOLDER},
    claimed_by = current_setting('application_name'),
    holder_key = %(holder)s,
    lease_expires_at = {_LEASE},
    attempts = o.attempts + (o.id = first.id)::int,
    started_at = CASE WHEN o.id = first.id THEN clock_timestamp() END
FROM picked, first
WHERE o.id = picked.id
RETURNING o.id, o.channel, o.sender_pid, o.attempts,
    CASE WHEN o.id = first.id THEN o.payload END, o.ordering_key, o.alone
"""

# Group commit. A group is a run of a claim's events handled
# in one transaction, each in a savepoint: either one event whose ``alone``
# is true, or consecutive events whose ``alone`` is not.
#
# START_GROUP_SQL counts the attempts of a whole group in one statement that
# commits before any of its handlers runs (the claim's first event, started
# by CLAIM_SQL, is counted there already), and marks them ``alone = false``
# (started in a group of several) unless they must run alone; an event in a
# group of its own is counted as an event run alone. Its payloads are read
# at once, with their headers (the sender's trace context, as JSON text, or
# NULL), so a group is cut once they pass %(max_bytes)s (its first event
# is always in): the held events it leaves out have NULL attempts. It commits with
# synchronous_commit off: it carries no writes of the user's, and losing it
# in a server crash loses one count of an attempt (one more attempt than
# DURABLE_MAX_ATTEMPTS, at most), never a delivery.
START_GROUP_SQL = f"""
WITH held AS (
    SELECT id, coalesce(sum(octet_length(payload)) OVER (ORDER BY id ROWS
        BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM {OUTBOX_TABLE}
    WHERE id = ANY(%(ids)s) AND claim_token = %(token)s AND state = 'running'
), chosen AS MATERIALIZED (
    SELECT id FROM held WHERE before < %(max_bytes)s
), started AS (
    UPDATE {OUTBOX_TABLE} AS o SET
        attempts = o.attempts + (o.started_at IS NULL)::int,
        started_at = coalesce(o.started_at, clock_timestamp()),
        lease_expires_at = {_LEASE},
        alone = CASE WHEN (SELECT count(*) FROM chosen) > 1 THEN coalesce(o.alone, false)
                     ELSE o.alone END,
        {_HOLDER}
    FROM chosen, (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
    WHERE o.id = chosen.id
    RETURNING o.id, o.attempts, o.payload, o.headers::text AS headers
)
SELECT held.id, started.attempts, started.payload, started.headers
FROM held LEFT JOIN started USING (id)
"""

# The end of a group, in its transaction, after every handler: the handled
# events deleted, the failed ones pending after their delay (or failed after
# the last attempt), and the started events that the group did not reach
# (its time ran out) claimed again as not started, their attempts given back.
# Returns the ids that the claim no longer holds (taken back by recovery):
# the group then rolls back to the savepoint of the first of them.
# ``relax``: synchronous_commit off for this transaction, only when no
# handler ran SQL in it (no user's writes): losing it in a server crash
# delivers the group's events once more, as at-least-once allows.
FINISH_GROUP_SQL = f"""
WITH done AS (
    DELETE FROM {OUTBOX_TABLE}
    WHERE id = ANY(%(done)s) AND claim_token = %(token)s AND state = 'running'
    RETURNING id
), failed AS (
    UPDATE {OUTBOX_TABLE} AS o SET
        state = CASE WHEN o.attempts >= %(max_attempts)s THEN 'failed' ELSE 'pending' END,
        last_error = f.error,
        available_at = clock_timestamp() + f.delay * interval '1 second',
        {_UNCLAIM}
    FROM unnest(%(failed)s::bigint[], %(errors)s::text[], %(delays)s::float8[])
        AS f(id, error, delay)
    WHERE o.id = f.id AND o.claim_token = %(token)s AND o.state = 'running'
    RETURNING o.id
), back AS (
    UPDATE {OUTBOX_TABLE} SET attempts = attempts - 1, started_at = NULL
    WHERE id = ANY(%(back)s) AND claim_token = %(token)s AND started_at IS NOT NULL
    RETURNING id
)
SELECT array(
    SELECT unnest(%(done)s::bigint[] || %(failed)s::bigint[])
    EXCEPT SELECT id FROM done EXCEPT SELECT id FROM failed
), (SELECT set_config('synchronous_commit', 'off', true) WHERE %(relax)s)
"""

# A group whose COMMIT failed (a deferred constraint, a serialization
# failure): which of its events caused it is unknown, so the events it ran get
# their attempt back and run alone from now on, due at once, as after a crash
# (RECOVER_SQL); the one that caused it fails alone, with its own error. The
# events it did not reach are given back to the claim, as FINISH_GROUP_SQL does.
ISOLATE_GROUP_SQL = f"""
WITH isolated AS (
    UPDATE {OUTBOX_TABLE} SET
        state = 'pending',
        attempts = attempts - 1,
        alone = true,
        available_at = clock_timestamp(),
        last_error = 'The transaction of a group of events failed to commit ('
            || %(error)s || '). This event runs alone from now on; that attempt '
            || 'is not counted.',
        {_UNCLAIM}
    WHERE id = ANY(%(ids)s) AND claim_token = %(token)s AND state = 'running'
    RETURNING id
), back AS (
    UPDATE {OUTBOX_TABLE} SET attempts = attempts - 1, started_at = NULL
    WHERE id = ANY(%(back)s) AND claim_token = %(token)s AND started_at IS NOT NULL
    RETURNING id
)
SELECT (SELECT count(*) FROM isolated), (SELECT count(*) FROM back)
"""

RENEW_SQL = f"""
UPDATE {OUTBOX_TABLE} SET lease_expires_at = {_LEASE}
WHERE id = ANY(%(ids)s) AND claim_token = %(token)s
"""

# Claimed events a listener will not start (it is stopping) go back as they were.
RELEASE_SQL = f"""
UPDATE {OUTBOX_TABLE} SET state = 'pending', {_UNCLAIM}
WHERE id = ANY(%(ids)s) AND claim_token = %(token)s AND started_at IS NULL
"""

# Claims whose holder's session is gone (its advisory lock, see HOLD_SQL, is
# no longer in pg_locks), or whose lease ran out. Rows claimed without a
# holder_key (a claim made without a holder) have their lease alone.
# An event not started goes back as it was; a started one has used its
# attempt: pending after the retry delay, or failed when it was the last.
# Except an event started in a group of events (``alone = false``, see
# START_GROUP_SQL): which of the group killed its listener is unknown, so
# each gets its attempt back and runs alone from now on (``alone = true``),
# at once: the culprit is then found, and counted, as any event run alone.
# Returns each row's id, new state, seconds until it is due, and ordering key.
RECOVER_SQL = f"""
WITH live AS MATERIALIZED (
    SELECT (classid::bigint << 32) | objid::bigint AS key FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 1 AND granted
)
UPDATE {OUTBOX_TABLE} AS o SET
    state = CASE WHEN o.started_at IS NOT NULL AND o.alone IS NOT false
                      AND o.attempts >= %(max_attempts)s
                 THEN 'failed' ELSE 'pending' END,
    attempts = o.attempts - (o.started_at IS NOT NULL AND o.alone IS false)::int,
    alone = o.alone OR o.started_at IS NOT NULL,
    available_at = CASE WHEN o.started_at IS NULL OR o.alone IS false THEN o.available_at
        ELSE clock_timestamp() + least(
            %(max_delay)s, %(delay)s * power(2, least(greatest(o.attempts - 1, 0), 60))
        ) * interval '1 second' END,
    last_error = CASE WHEN o.started_at IS NULL THEN o.last_error
        WHEN o.alone IS false THEN format(
            'A group of events did not finish: its listener (pid %%s) %%s. '
            'This event runs alone from now on; that attempt is not counted.',
            o.claimed_pid,
            CASE WHEN o.lease_expires_at <= clock_timestamp()
                 THEN 'held it past its lease (DURABLE_LEASE)'
                 ELSE 'disconnected or died' END)
        ELSE format(
            'Attempt %%s did not finish: its listener (pid %%s, %%s) %%s.',
            o.attempts, o.claimed_pid, coalesce(nullif(o.claimed_by, ''), 'no application_name'),
            CASE WHEN o.lease_expires_at <= clock_timestamp()
                 THEN 'held it past its lease (DURABLE_LEASE)'
                 ELSE 'disconnected or died' END
        ) END,
    {_UNCLAIM}
WHERE o.state = 'running' AND o.channel = ANY(%(channels)s) AND (
    o.lease_expires_at <= clock_timestamp()
    OR (o.holder_key IS NOT NULL AND o.holder_key NOT IN (SELECT key FROM live))
)
RETURNING o.id, o.state,
    greatest(extract(epoch FROM o.available_at - clock_timestamp()), 0)::float8, o.ordering_key
"""
