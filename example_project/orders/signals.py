"""Every saved status reaches the order's open pages, at commit."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db.models.signals import post_save
from django.dispatch import receiver

from orders.models import Order


@receiver(post_save, sender=Order, dispatch_uid="orders.announce_status")
def announce_status(sender: type[Order], instance: Order, created: bool, **kwargs: Any) -> None:
    """Send the status to the order's group (``OrderStatusConsumer``).

    Sent in the save's transaction, on its connection: the pages hear of it
    when the transaction commits, and never if it rolls back. Outside a
    transaction (autocommit) it goes at once, after the save.
    """
    if created or kwargs.get("raw"):
        return  # no page watches an order that did not exist; fixtures stay quiet
    async_to_sync(get_channel_layer().group_send)(
        Order.group_name(instance.pk), {"type": "order.status", "status": instance.status}
    )
