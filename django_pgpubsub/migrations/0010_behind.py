"""Ordering keys with a deep backlog: events known to wait behind their key's head.

``behind``: true when a keyed event was stored while an earlier event of its
key was pending or running. Added as ``boolean NOT NULL DEFAULT false`` in
one statement, and the default is kept: PostgreSQL 11 and later store a
constant default in the catalog (no rewrite of the table, an ``ACCESS
EXCLUSIVE`` lock for an instant), and writers that do not name the column
(listeners and senders older than this migration, the triggers of
``publish_changes`` frozen into your migrations) still insert. Rows already
stored stay false.

The flag is a hint: a claim skips rows that are ``behind`` (through
``pgpubsub_outbox_heads``) and still checks each row it takes against its
key's earlier events, so a stale false costs one probe and a stale true
delays an event until a listener repairs it (``behind_sql.REPAIR_SQL``,
every ``DURABLE_POLL_INTERVAL``). Triggers keep it, whoever writes:

* ``pgpubsub_outbox_stored``: before each keyed row is inserted, ``behind``
  is whether an earlier event of its key is pending or running (a row of
  the same statement counts: the function is VOLATILE, so it sees them);
* ``pgpubsub_outbox_deleted``: after a keyed row is deleted (handled,
  purged, deleted by anyone), ``django_pgpubsub_promote`` clears ``behind``
  on its key's first row that is behind, unless an earlier event of its key
  is still pending or running.

A dead letter under ``ORDERING_ON_DEAD_LETTER = "continue"`` is promoted by
the listener (the database does not know the setting). The two indexes are
built with CREATE INDEX CONCURRENTLY, as 0006's: this migration is not
atomic; if it is interrupted, drop the invalid index it leaves (``DROP INDEX
CONCURRENTLY <name>``) and migrate again. ``pgpubsub_outbox_behind`` comes
last: listeners use the flag once it exists (until then they claim as
before, which stays correct).
"""

from __future__ import annotations

import importlib
from typing import Any

from django.db import migrations, models

# 0006's operation: CONCURRENTLY on PostgreSQL, a plain CREATE INDEX elsewhere.
AddIndexConcurrentlyOnPostgreSQL = importlib.import_module(
    "django_pgpubsub.migrations.0006_failed_index"
).AddIndexConcurrentlyOnPostgreSQL

ADD_COLUMN = (
    'ALTER TABLE "django_pgpubsub_outbox" ADD COLUMN "behind" boolean DEFAULT false NOT NULL'
)

# Written out as of this migration: later changes are new migrations.
#
# Each function keeps its statements' plans for the session, planned when the
# outbox may have been nearly empty: a sequential scan then, which an outbox
# grown to a deep backlog would pay on each row stored or deleted. Without
# sequential scans, the plans read the indexes whatever the outbox's size;
# and "(ordering_key, id) < (key, id)", which only the ordering index can
# bound, keeps them off a scan of the primary key from its first row.
#
# n_distinct = -1: the planner takes every ordering key for rare (it is, but
# for the deep backlogs of a few keys), so the claim's probes of a key's
# earlier events read the ordering index: with one key's 100,000 events, it
# otherwise expects an early match in a sequential scan, which finds none and
# reads them all. It takes effect at the outbox's next ANALYZE (autovacuum's).
CREATE = """
CREATE FUNCTION django_pgpubsub_promote(p_key text, p_blocking text[])
RETURNS text LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_id bigint;
    v_channel text;
BEGIN
    SELECT id INTO v_id FROM django_pgpubsub_outbox
    WHERE ordering_key = p_key AND behind ORDER BY id LIMIT 1;
    IF v_id IS NULL OR EXISTS (
        SELECT 1 FROM django_pgpubsub_outbox
        WHERE ordering_key = p_key AND (ordering_key, id) < (p_key, v_id)
            AND state = ANY(p_blocking)
    ) THEN
        RETURN NULL;
    END IF;
    UPDATE django_pgpubsub_outbox SET behind = false
    WHERE id = v_id AND behind
    RETURNING channel INTO v_channel;
    RETURN v_channel;
END
$$;

CREATE FUNCTION django_pgpubsub_outbox_stored() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off AS $$
BEGIN
    NEW.behind := EXISTS (
        SELECT 1 FROM django_pgpubsub_outbox
        WHERE ordering_key = NEW.ordering_key
            AND (ordering_key, id) < (NEW.ordering_key, NEW.id)
            AND state IN ('pending', 'running')
    );
    RETURN NEW;
END
$$;

CREATE FUNCTION django_pgpubsub_outbox_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM django_pgpubsub_promote(OLD.ordering_key, ARRAY['pending', 'running']);
    RETURN NULL;
END
$$;

CREATE TRIGGER pgpubsub_outbox_stored BEFORE INSERT ON django_pgpubsub_outbox
FOR EACH ROW WHEN (NEW.ordering_key IS NOT NULL)
EXECUTE FUNCTION django_pgpubsub_outbox_stored();

CREATE TRIGGER pgpubsub_outbox_deleted AFTER DELETE ON django_pgpubsub_outbox
FOR EACH ROW WHEN (OLD.ordering_key IS NOT NULL)
EXECUTE FUNCTION django_pgpubsub_outbox_deleted();

ALTER TABLE django_pgpubsub_outbox ALTER COLUMN ordering_key SET (n_distinct = -1);
"""

DROP = """
ALTER TABLE django_pgpubsub_outbox ALTER COLUMN ordering_key RESET (n_distinct);
DROP TRIGGER pgpubsub_outbox_deleted ON django_pgpubsub_outbox;
DROP TRIGGER pgpubsub_outbox_stored ON django_pgpubsub_outbox;
DROP FUNCTION django_pgpubsub_outbox_deleted();
DROP FUNCTION django_pgpubsub_outbox_stored();
DROP FUNCTION django_pgpubsub_promote(text, text[]);
"""


# 0004's helper: the statement on PostgreSQL only.
on_postgresql = importlib.import_module(
    "django_pgpubsub.migrations.0004_complete_function"
).on_postgresql


class AddFieldKeepingItsDefault(migrations.AddField):
    """On PostgreSQL, the column with its default kept in the database (Django's
    AddField drops it after filling the rows, and Django 4.2 has no
    ``db_default``); elsewhere, Django's AddField."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(ADD_COLUMN)
        else:
            super().database_forwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("django_pgpubsub", "0009_group_commit"),
    ]

    operations = [
        AddFieldKeepingItsDefault(
            model_name="outboxevent",
            name="behind",
            field=models.BooleanField(
                default=False,
                editable=False,
                help_text="Stored behind an earlier event of its ordering key (a hint).",
            ),
        ),
        migrations.RunPython(on_postgresql(CREATE), on_postgresql(DROP)),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="outboxevent",
            index=models.Index(
                condition=models.Q(("behind", False), ("state", "pending")),
                fields=["channel", "id"],
                include=("available_at",),
                name="pgpubsub_outbox_heads",
            ),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="outboxevent",
            index=models.Index(
                condition=models.Q(("behind", True)),
                fields=["ordering_key", "id"],
                name="pgpubsub_outbox_behind",
            ),
        ),
    ]
