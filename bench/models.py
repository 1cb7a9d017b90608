"""The benchmarks' tables (made by bench.triggers and bench.writers, not migrations)."""

from __future__ import annotations

from django.db import models

from django_pgpubsub import publish_on_save


class ChangedRow(models.Model):
    value = models.IntegerField()

    class Meta:
        managed = False
        db_table = "bench_statement"

    def __str__(self) -> str:
        return str(self.value)


class WrittenRow(models.Model):
    """A row the writers bench saves with no publishing (the save() reference)."""

    value = models.IntegerField()

    class Meta:
        managed = False
        db_table = "bench_written"

    def __str__(self) -> str:
        return str(self.value)


@publish_on_save(channel="bench.published")
class PublishedRow(models.Model):
    """The same row under publish_on_save: every save sends a NOTIFY."""

    value = models.IntegerField()

    class Meta:
        managed = False
        db_table = "bench_published"

    def __str__(self) -> str:
        return str(self.value)
