"""The row the writing handler saves (a table the child makes, not a migration)."""

from __future__ import annotations

from django.db import models

TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS bench_against_written (id bigserial PRIMARY KEY, value integer)"
)


class AgainstRow(models.Model):
    value = models.IntegerField()

    class Meta:
        managed = False
        app_label = "pgpubsub_against"
        db_table = "bench_against_written"

    def __str__(self) -> str:
        return str(self.value)
