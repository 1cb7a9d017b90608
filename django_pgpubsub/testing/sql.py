"""The statements of eager mode, on the session's temporary table of events.

Everything published in eager mode is written, in order, into the temporary
table ``pg_temp.pgpubsub_eager``: plain events by ``notify()`` (through its
eager hook) and by the ``publish_changes`` triggers (while the
``pgpubsub.eager`` setting is ``'on'``); durable events as the id of their
outbox row. Being a table, it follows the transaction: a rolled-back
savepoint takes its rows with it. At commit they are taken back, oldest first.

Durable events are then handled by the listener's own cycle
(:func:`django_pgpubsub.durable.claim.run_now`).
"""

from __future__ import annotations

from django_pgpubsub.db.sql import OUTBOX_TABLE
from django_pgpubsub.publishing.triggers import EAGER_SETTING, EAGER_TABLE

# Table and setting go together: both are undone by the same rollback.
CREATE_SQL = f"""
CREATE TEMP TABLE IF NOT EXISTS {EAGER_TABLE} (
    n bigserial PRIMARY KEY,
    channel text,
    payload text,
    outbox_id bigint,
    pid integer NOT NULL DEFAULT pg_backend_pid()
)
"""
ARMED_SQL = f"""
SELECT coalesce(current_setting('{EAGER_SETTING}', true), '') = 'on'
    AND to_regclass('pg_temp.{EAGER_TABLE}') IS NOT NULL
"""
SET_SQL = f"SELECT set_config('{EAGER_SETTING}', %s, false)"

RECORD_SQL = f"""
INSERT INTO pg_temp.{EAGER_TABLE} (channel, payload)
SELECT c, p FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(c, p, i) ORDER BY i
RETURNING n
"""

# The durable events this session stored last: the outbox ids only grow, and
# no other live session has this backend's pid.
RECORD_STORED_SQL = f"""
INSERT INTO pg_temp.{EAGER_TABLE} (outbox_id)
SELECT id FROM (
    SELECT id FROM {OUTBOX_TABLE} WHERE sender_pid = pg_backend_pid() ORDER BY id DESC LIMIT %s
) AS stored ORDER BY id
RETURNING n
"""

NEWEST_SQL = f"SELECT max(n) FROM pg_temp.{EAGER_TABLE}"
COUNT_SQL = f"SELECT count(*) FROM pg_temp.{EAGER_TABLE}"

TAKE_SQL = f"""
DELETE FROM pg_temp.{EAGER_TABLE} WHERE n <= %s
RETURNING n, channel, payload, outbox_id, pid
"""

# The durable events stored, as they are now (in id order).
OUTBOX_ROWS_SQL = f"""
SELECT id, channel, payload, sender_pid, attempts FROM {OUTBOX_TABLE}
WHERE id = ANY(%s::bigint[]) ORDER BY id
"""

COUNT_CHANNELS_SQL = f"""
SELECT count(*) FROM pg_temp.{EAGER_TABLE} AS e
LEFT JOIN {OUTBOX_TABLE} AS o ON o.id = e.outbox_id
WHERE coalesce(e.channel, o.channel) = ANY(%s::text[])
"""
