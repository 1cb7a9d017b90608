from __future__ import annotations

import uuid
from decimal import Decimal

from django.contrib.auth.models import User
from django.db import models

from django_pgpubsub import publish_on_save


class Received(models.Model):
    """One handler call, written by the handlers in pubsub.py."""

    channel = models.TextField()
    payload = models.TextField()
    handler = models.TextField()
    pid = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.handler} <- {self.channel}: {self.payload[:40]}"


@publish_on_save
class Order(models.Model):
    """Published with the defaults: channel "testapp.order", every field."""

    status = models.CharField(max_length=20, default="new")
    total = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    placed_at = models.DateTimeField(null=True)
    token = models.UUIDField(default=uuid.uuid4)
    customer = models.ForeignKey(User, null=True, on_delete=models.SET_NULL)
    attachment = models.FileField(upload_to="orders", blank=True)
    notes = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.status})"


@publish_on_save(channel="shipments", fields=("code",), events=("created", "deleted"))
class Shipment(models.Model):
    """Published with options, keyed by a UUID."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    code = models.CharField(max_length=20)
    order = models.ForeignKey(Order, on_delete=models.CASCADE)

    def __str__(self) -> str:
        return self.code


@publish_on_save(fields=("name",))
class Place(models.Model):
    """A published parent of a multi-table child (channel "testapp.place")."""

    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Restaurant(Place):
    """A multi-table child of Place, not published itself."""

    serves_pizza = models.BooleanField(default=False)
