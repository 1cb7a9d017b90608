"""The outbox table behind durable events (``notify(..., durable=True)``)."""

from __future__ import annotations

from django.db import models

from django_pgpubsub.outbox import OUTBOX_TABLE


class OutboxEvent(models.Model):
    """A durable event: stored in the sender's transaction, deleted once handled.

    Rows only exist while an event waits for a listener, is being retried, or
    has failed every attempt.
    """

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        FAILED = "failed", "failed"

    channel = models.CharField(max_length=63)
    payload = models.TextField(blank=True)
    sender_pid = models.IntegerField(help_text="Backend process id of the sender.")
    state = models.CharField(max_length=7, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    available_at = models.DateTimeField(help_text="Not handled before this time.")
    last_error = models.TextField(blank=True, help_text="Traceback of the last failure.")

    class Meta:
        db_table = OUTBOX_TABLE
        verbose_name = "durable event"
        indexes = (
            # What listeners claim: pending rows of their channels, oldest first.
            models.Index(
                fields=["channel", "id"],
                condition=models.Q(state="pending"),
                name="pgpubsub_outbox_pending",
            ),
        )

    def __str__(self) -> str:
        return f"{self.channel} #{self.pk} ({self.state}, {self.attempts} attempt(s))"
