from __future__ import annotations

import uuid
from decimal import Decimal

from django.contrib.auth.models import User
from django.db import models

from django_pgpubsub import publish_changes, publish_on_save


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


@publish_changes
class Item(models.Model):
    """Published by statement-level triggers, with the defaults."""

    name = models.CharField(max_length=40, default="")
    status = models.CharField(max_length=20, default="new")
    quantity = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.name


@publish_changes(channel="tracked", events=("updated",), changed=("status",))
class Tracked(models.Model):
    """Updates published only when the status changes."""

    status = models.CharField(max_length=20, default="new")
    note = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.status


@publish_changes(channel="test.changes.durable", durable=True)
class DurableItem(models.Model):
    """Changes written to the outbox by the trigger."""

    name = models.CharField(max_length=40)

    def __str__(self) -> str:
        return self.name


@publish_changes
class Ticket(models.Model):
    """A UUID primary key: keys are published as JSON strings."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    title = models.CharField(max_length=40)

    def __str__(self) -> str:
        return self.title


@publish_changes
class Gadget(models.Model):
    """A table in another schema, named as "schema"."table"."""

    name = models.CharField(max_length=40)

    class Meta:
        db_table = '"testapp_schema"."gadget"'

    def __str__(self) -> str:
        return self.name


@publish_changes
class Venue(models.Model):
    """Parent of a multi-table inheritance pair; both published by triggers."""

    name = models.CharField(max_length=40)

    def __str__(self) -> str:
        return self.name


@publish_changes
class Cinema(Venue):
    film = models.CharField(max_length=40)


@publish_changes
class Code(models.Model):
    """A text primary key: keys are measured, JSON-escaped, and may be huge."""

    code = models.CharField(primary_key=True, max_length=9000)

    def __str__(self) -> str:
        return self.code


@publish_changes(channel="test.changes.ordered", durable=True, ordering="pk")
class OrderedItem(models.Model):
    """Each changed row its own outbox row, keyed "testapp.ordereditem:<pk>"."""

    name = models.CharField(max_length=40)
    step = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.name


@publish_changes(channel="test.changes.ordered", durable=True, ordering="pk")
class OrderedCode(models.Model):
    """A text primary key, which may be too long for an ordering key."""

    code = models.CharField(primary_key=True, max_length=2000)

    def __str__(self) -> str:
        return self.code
