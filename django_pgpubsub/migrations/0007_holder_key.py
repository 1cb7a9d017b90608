"""Liveness of claims that every role can read, and payloads read one at a time.

``holder_key``: the random key of the session advisory lock that the claiming
listener holds on its listening connection; recovery looks it up in
``pg_locks`` instead of ``pg_stat_activity``, whose ``backend_start`` other
roles cannot see and whose pid a pooler recycles. A nullable column without a
default: adding it rewrites nothing and takes its lock for an instant.

``django_pgpubsub_complete_next``: 0004's completion, which also returns the
started event's payload. 0004's function stays for listeners of the previous
release during a rolling upgrade; a later migration drops it.
"""

import importlib

from django.db import migrations, models

CREATE = """
CREATE FUNCTION django_pgpubsub_complete_next(
    p_id bigint, p_token uuid, p_lease double precision, p_next bigint,
    OUT completed boolean, OUT next_attempt integer, OUT next_payload text
) LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM django_pgpubsub_outbox WHERE id = p_id AND claim_token = p_token;
    completed := FOUND;
    IF p_next IS NOT NULL THEN
        UPDATE django_pgpubsub_outbox SET
            attempts = attempts + 1,
            started_at = clock_timestamp(),
            lease_expires_at = clock_timestamp() + p_lease * interval '1 second',
            claimed_pid = pg_backend_pid(),
            claimed_at = clock_timestamp()
        WHERE id = p_next AND claim_token = p_token AND state = 'running'
            AND started_at IS NULL
        RETURNING attempts, payload INTO next_attempt, next_payload;
    END IF;
END
$$
"""

DROP = "DROP FUNCTION django_pgpubsub_complete_next(bigint, uuid, double precision, bigint)"


# 0004's helper: the statement on PostgreSQL only.
on_postgresql = importlib.import_module(
    "django_pgpubsub.migrations.0004_complete_function"
).on_postgresql


class Migration(migrations.Migration):
    dependencies = [
        ("django_pgpubsub", "0006_failed_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="outboxevent",
            name="holder_key",
            field=models.BigIntegerField(
                blank=True,
                editable=False,
                help_text="Advisory lock key held by the claiming listener while it lives.",
                null=True,
            ),
        ),
        migrations.RunPython(on_postgresql(CREATE), on_postgresql(DROP)),
    ]
