"""Handlers, found by autodiscovery and run by `manage.py listen_events`."""

from __future__ import annotations

from django_pgpubsub import DurableEvent, Event, handler
from orders.models import Activity


@handler("orders.order")
def order_changed(event: Event) -> None:
    """A model event from publish_on_save(Order)."""
    fields = event.data["fields"] or {}
    Activity.objects.create(
        channel=event.channel,
        message=(
            f"Order #{event.data['pk']} {event.data['event']}: "
            f"{fields.get('quantity', '?')} x {fields.get('item', '?')} "
            f"for {fields.get('customer', '?')} ({fields.get('status', 'gone')})"
        ),
        sender_pid=event.pid,
    )


@handler("audit")
def audit(event: Event) -> None:
    """An explicit notify() from the checkout view."""
    Activity.objects.create(
        channel=event.channel,
        message=f"Audit: {event.data['user']} placed order #{event.data['order']}",
        sender_pid=event.pid,
    )


@handler("mail.confirmation")
def mail_confirmation(event: Event) -> None:
    """A durable event: runs in the transaction that marks it done, so this
    row and the event's completion commit together (or are retried together)."""
    assert isinstance(event, DurableEvent)
    Activity.objects.create(
        channel=event.channel,
        message=(
            f"Mailed the confirmation of order #{event.data['order']} to "
            f"{event.data['to']} (durable event {event.id}, attempt {event.attempt})"
        ),
        sender_pid=event.pid,
    )
