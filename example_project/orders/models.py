from __future__ import annotations

from django.db import models
from django.urls import reverse

from django_pgpubsub import publish_on_save


@publish_on_save(fields=("customer", "item", "quantity", "status"))
class Order(models.Model):
    """Every create, update and delete is published on channel "orders.order"."""

    customer = models.CharField(max_length=100)
    item = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, default="placed")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Order #{self.pk}: {self.quantity} x {self.item} for {self.customer}"

    def get_absolute_url(self) -> str:
        return reverse("order", args=[self.pk])

    @staticmethod
    def group_name(pk: int) -> str:
        """The channel layer group of the pages that watch order ``pk``."""
        return f"order-{pk}"


@publish_on_save(fields=("channel", "message"), events=("created",))
class Activity(models.Model):
    """Written by the handlers in pubsub.py, in the listen_events process.

    Each new row is published on "orders.activity", which the page receives
    live through ActivityStream (an EventStreamView).
    """

    channel = models.CharField(max_length=63)
    message = models.TextField()
    sender_pid = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-id",)
        verbose_name_plural = "activity"

    def __str__(self) -> str:
        return self.message
