"""Group commit: whether an event must run alone.

``alone``: NULL for events that were never started in a group (and for rows
written by listeners and senders older than this migration); false while
the event's attempt runs in a group of events, which commits the handlers'
writes of many events at once; true once a group it belonged to did not
finish (its listener died or overran its lease): it then runs in a group of
its own until it is handled, so that an event that kills its process is
counted, and dead-lettered, alone. Nullable without a default: adding it
rewrites nothing, and every writer that names only 0001's columns still
works.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_pgpubsub", "0008_ordering_key"),
    ]

    operations = [
        migrations.AddField(
            model_name="outboxevent",
            name="alone",
            field=models.BooleanField(
                blank=True,
                editable=False,
                help_text=(
                    "False while run in a group of events; true once such a group did "
                    "not finish: then run alone until handled."
                ),
                null=True,
            ),
        ),
    ]
