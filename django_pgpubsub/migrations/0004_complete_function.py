"""The completion of a durable event as a PL/pgSQL function.

PL/pgSQL keeps its statements' plans for the session, so each completion
skips parsing and planning (about half of its cost), through any pooler, with
either driver. The body is written out here, as of this migration: later
changes are new migrations.
"""

from collections.abc import Callable

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

# Deletes event p_id if claim p_token still holds it, and starts event p_next
# of that claim (counts its attempt and leases it from now). completed says
# whether p_id was deleted; next_attempt is p_next's attempt number, or NULL
# when it was not started.
CREATE = """
CREATE FUNCTION django_pgpubsub_complete(
    p_id bigint, p_token uuid, p_lease double precision, p_next bigint,
    OUT completed boolean, OUT next_attempt integer
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
        RETURNING attempts INTO next_attempt;
    END IF;
END
$$
"""

DROP = "DROP FUNCTION django_pgpubsub_complete(bigint, uuid, double precision, bigint)"


def on_postgresql(statement: str) -> Callable[[Apps, BaseDatabaseSchemaEditor], None]:
    """Run ``statement`` on PostgreSQL only: other databases never sweep an outbox."""

    def run(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("django_pgpubsub", "0003_probe_index"),
    ]

    operations = [
        migrations.RunPython(on_postgresql(CREATE), on_postgresql(DROP)),
    ]
