from __future__ import annotations

from django.db import models


class Received(models.Model):
    """One handler call, written by the handlers in pubsub.py."""

    channel = models.TextField()
    payload = models.TextField()
    handler = models.TextField()
    pid = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.handler} <- {self.channel}: {self.payload[:40]}"
