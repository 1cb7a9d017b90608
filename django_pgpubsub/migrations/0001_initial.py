"""The schema of the first release: the outbox of durable events, the
Channels layer's stored messages, and the outbox's ordering-key triggers.

The SQL functions carry a version in their names (``_v1``): a later release
that changes one adds ``_v2`` beside it in a migration of its own, so that
code of both releases runs during a rolling deploy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import migrations, models

# ``behind``: a hint of the ordering-key triggers (see docs/internals.rst),
# with its default kept in the database, for writers that do not name it
# (the triggers of ``publish_changes`` frozen into your migrations).
#
# ``django_pgpubsub_outbox_stored_v1``, before each keyed row is stored:
# a transaction-level advisory lock on its key, so that a key's writers
# commit one after the other, then the row's id, so that id order is commit
# order; then whether an earlier event of its key waits (``behind``).
# ``django_pgpubsub_outbox_deleted_v1``, after a keyed row is deleted: its
# key's next row is made a head (``django_pgpubsub_promote_v1``).
#
# Each function keeps its plans for the session, planned while the outbox
# may have been nearly empty: without sequential scans they read the indexes
# whatever its size, and "(ordering_key, id) < (key, id)" keeps them off a
# scan of the primary key. n_distinct = -1 tells the planner that ordering
# keys are rare, so the claim's probes read the ordering index even with one
# key's deep backlog.
CREATE = """
ALTER TABLE django_pgpubsub_outbox ALTER COLUMN behind SET DEFAULT false;
ALTER TABLE django_pgpubsub_outbox ALTER COLUMN ordering_key SET (n_distinct = -1);

CREATE FUNCTION django_pgpubsub_promote_v1(p_key text, p_blocking text[])
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

CREATE FUNCTION django_pgpubsub_outbox_stored_v1() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1885827187, hashtext(NEW.ordering_key));
    NEW.id := nextval(pg_get_serial_sequence('django_pgpubsub_outbox', 'id'));
    NEW.behind := EXISTS (
        SELECT 1 FROM django_pgpubsub_outbox
        WHERE ordering_key = NEW.ordering_key
            AND (ordering_key, id) < (NEW.ordering_key, NEW.id)
            AND state IN ('pending', 'running')
    );
    RETURN NEW;
END
$$;

CREATE FUNCTION django_pgpubsub_outbox_deleted_v1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM django_pgpubsub_promote_v1(OLD.ordering_key, ARRAY['pending', 'running']);
    RETURN NULL;
END
$$;

CREATE TRIGGER pgpubsub_outbox_stored BEFORE INSERT ON django_pgpubsub_outbox
FOR EACH ROW WHEN (NEW.ordering_key IS NOT NULL)
EXECUTE FUNCTION django_pgpubsub_outbox_stored_v1();

CREATE TRIGGER pgpubsub_outbox_deleted AFTER DELETE ON django_pgpubsub_outbox
FOR EACH ROW WHEN (OLD.ordering_key IS NOT NULL)
EXECUTE FUNCTION django_pgpubsub_outbox_deleted_v1();
"""

DROP = """
DROP TRIGGER pgpubsub_outbox_deleted ON django_pgpubsub_outbox;
DROP TRIGGER pgpubsub_outbox_stored ON django_pgpubsub_outbox;
DROP FUNCTION django_pgpubsub_outbox_deleted_v1();
DROP FUNCTION django_pgpubsub_outbox_stored_v1();
DROP FUNCTION django_pgpubsub_promote_v1(text, text[]);
"""


def on_postgresql(sql: str) -> Callable[[Any, Any], None]:
    """``sql`` run on PostgreSQL only: a project may keep another database
    (SQLite in its unit tests) where the outbox is never used."""

    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):

    initial = True

    dependencies = [
    ]

    operations = [
        migrations.CreateModel(
            name='LayerMessage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('channel', models.CharField(blank=True, help_text='The normal channel it waits in.', max_length=100, null=True)),
                ('body', models.TextField(help_text='The encoded message and its destination.')),
                ('expires_at', models.DateTimeField(db_index=True)),
            ],
            options={
                'verbose_name': 'channel layer message',
                'db_table': 'django_pgpubsub_layer_message',
                'indexes': (models.Index(condition=models.Q(('channel__isnull', False)), fields=['channel', 'id'], name='pgpubsub_layer_queue_idx'),),
            },
        ),
        migrations.CreateModel(
            name='OutboxEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('channel', models.CharField(max_length=63)),
                ('payload', models.TextField(blank=True)),
                ('key', models.TextField(blank=True, help_text='Idempotency key: unique among waiting events.', null=True)),
                ('ordering_key', models.TextField(blank=True, help_text='Events with the same ordering key run one at a time, in id order.', null=True)),
                ('headers', models.JSONField(blank=True, help_text='Trace context of the sender (W3C traceparent, tracestate).', null=True)),
                ('sender_pid', models.IntegerField(help_text='Backend process id of the sender.')),
                ('state', models.CharField(choices=[('pending', 'pending'), ('running', 'running'), ('failed', 'failed')], default='pending', max_length=7)),
                ('attempts', models.PositiveIntegerField(default=0, help_text='Attempts started so far.')),
                ('created_at', models.DateTimeField()),
                ('available_at', models.DateTimeField(help_text='Not handled before this time.')),
                ('last_error', models.TextField(blank=True, help_text='Traceback of the last failure.')),
                ('claim_token', models.UUIDField(blank=True, editable=False, null=True)),
                ('claimed_pid', models.IntegerField(blank=True, help_text='Backend process id of the listener holding it.', null=True)),
                ('claimed_by', models.TextField(blank=True, help_text='application_name of the listener holding it.', null=True)),
                ('claimed_at', models.DateTimeField(blank=True, help_text='Held since (the claim, or the start of its attempt).', null=True)),
                ('lease_expires_at', models.DateTimeField(blank=True, help_text='Claimed again by another listener after this time.', null=True)),
                ('started_at', models.DateTimeField(blank=True, help_text='When its running attempt started.', null=True)),
                ('holder_key', models.BigIntegerField(blank=True, editable=False, help_text='Advisory lock key held by the claiming listener while it lives.', null=True)),
                ('alone', models.BooleanField(blank=True, editable=False, help_text='False while run in a group of events; true once such a group did not finish: then run alone until handled.', null=True)),
                ('behind', models.BooleanField(default=False, editable=False, help_text='Stored behind an earlier event of its ordering key (a hint).')),
            ],
            options={
                'verbose_name': 'durable event',
                'db_table': 'django_pgpubsub_outbox',
                'indexes': [models.Index(condition=models.Q(('state', 'pending')), fields=['channel', 'id'], include=('available_at',), name='pgpubsub_outbox_pending'), models.Index(condition=models.Q(('state', 'running')), fields=['id'], name='pgpubsub_outbox_running'), models.Index(condition=models.Q(('state', 'failed')), fields=['channel'], name='pgpubsub_outbox_failed'), models.Index(condition=models.Q(('ordering_key__isnull', False)), fields=['ordering_key', 'id'], include=('state',), name='pgpubsub_outbox_ordering'), models.Index(condition=models.Q(('ordering_key__isnull', False), ('state', 'running')), fields=['ordering_key'], name='pgpubsub_outbox_key_running'), models.Index(condition=models.Q(('attempts__gt', 0), ('ordering_key__isnull', False), ('state__in', ('pending', 'failed'))), fields=['ordering_key', 'id'], name='pgpubsub_outbox_key_retrying'), models.Index(condition=models.Q(('behind', False), ('state', 'pending')), fields=['channel', 'id'], include=('available_at',), name='pgpubsub_outbox_heads'), models.Index(condition=models.Q(('behind', True)), fields=['ordering_key', 'id'], name='pgpubsub_outbox_behind')],
                'constraints': [models.UniqueConstraint(condition=models.Q(('state__in', ('pending', 'running'))), fields=('key',), name='pgpubsub_outbox_waiting_key')],
            },
        ),
        migrations.RunPython(on_postgresql(CREATE), on_postgresql(DROP)),
    ]
