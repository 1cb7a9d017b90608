"""Ordering keys: ``notify(..., durable=True, ordering_key=...)``.

``ordering_key``: a nullable column without a default, so adding it rewrites
nothing and takes its lock for an instant. Three partial indexes on keyed rows
only (events without a key never enter them, and cost nothing more): the
claim's probes (an earlier event of the key waiting; one of the key running)
and the blocked keys that status and metrics count. Built with CREATE INDEX
CONCURRENTLY, as 0006's, so this migration is not atomic; if it is
interrupted, drop the invalid index it leaves (``DROP INDEX CONCURRENTLY
<name>``) and migrate again. ``pgpubsub_outbox_ordering`` comes last: the
listener sweeps the outbox once it exists.
"""

from __future__ import annotations

import importlib

from django.db import migrations, models

# 0006's operation: CONCURRENTLY on PostgreSQL, a plain CREATE INDEX elsewhere.
AddIndexConcurrentlyOnPostgreSQL = importlib.import_module(
    "django_pgpubsub.migrations.0006_failed_index"
).AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("django_pgpubsub", "0007_holder_key"),
    ]

    operations = [
        migrations.AddField(
            model_name="outboxevent",
            name="ordering_key",
            field=models.TextField(
                blank=True,
                help_text="Events with the same ordering key run one at a time, in id order.",
                null=True,
            ),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="outboxevent",
            index=models.Index(
                condition=models.Q(("ordering_key__isnull", False), ("state", "running")),
                fields=["ordering_key"],
                name="pgpubsub_outbox_key_running",
            ),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="outboxevent",
            index=models.Index(
                condition=models.Q(
                    ("attempts__gt", 0),
                    ("ordering_key__isnull", False),
                    ("state__in", ("pending", "failed")),
                ),
                fields=["ordering_key", "id"],
                name="pgpubsub_outbox_key_retrying",
            ),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="outboxevent",
            index=models.Index(
                condition=models.Q(("ordering_key__isnull", False)),
                fields=["ordering_key", "id"],
                include=("state",),
                name="pgpubsub_outbox_ordering",
            ),
        ),
    ]
