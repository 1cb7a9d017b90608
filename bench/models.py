"""The table the trigger benchmark publishes (made by bench.triggers, not migrations)."""

from __future__ import annotations

from django.db import models


class ChangedRow(models.Model):
    value = models.IntegerField()

    class Meta:
        managed = False
        db_table = "bench_statement"

    def __str__(self) -> str:
        return str(self.value)
