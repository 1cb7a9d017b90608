"""An index of failed events by channel, for ``pubsub_health`` and the metrics.

Built with CREATE INDEX CONCURRENTLY: it takes no lock that stops writers
(or readers) of the outbox, however long the outbox. So this migration is not
atomic; if it is interrupted, an invalid index may remain: drop it
(``DROP INDEX CONCURRENTLY pgpubsub_outbox_failed``) and migrate again.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexConcurrentlyOnPostgreSQL(AddIndexConcurrently):
    """CONCURRENTLY on PostgreSQL; a plain CREATE INDEX elsewhere (a project's
    SQLite alias, where the outbox is never used but migrate still runs)."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_forwards(
                self, app_label, schema_editor, from_state, to_state
            )

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_backwards(
                self, app_label, schema_editor, from_state, to_state
            )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("django_pgpubsub", "0005_layer_message"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="outboxevent",
            index=models.Index(
                condition=models.Q(("state", "failed")),
                fields=["channel"],
                name="pgpubsub_outbox_failed",
            ),
        ),
    ]
