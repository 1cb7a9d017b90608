"""Rows for Channels layer messages too large for a NOTIFY payload."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_pgpubsub", "0004_complete_function")]

    operations = [
        migrations.CreateModel(
            name="LayerMessage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "body",
                    models.TextField(help_text="The encoded message and its destination."),
                ),
                ("expires_at", models.DateTimeField(db_index=True)),
            ],
            options={
                "verbose_name": "channel layer message",
                "db_table": "django_pgpubsub_layer_message",
            },
        ),
    ]
