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

from collections.abc import Callable

from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

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


def on_postgresql(statement: str) -> Callable[[Apps, BaseDatabaseSchemaEditor], None]:
    """Run ``statement`` on PostgreSQL only: other databases never sweep an outbox."""

    def run(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(statement)

    return run


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
