"""Handing events from the hub's thread to subscribers on their own loops:
one ``call_soon_threadsafe`` per loop and batch, not per subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping

from django_pgpubsub.exceptions import ConnectionLost
from django_pgpubsub.hub.subscription import Subscription
from django_pgpubsub.vocabulary.events import Event

logger = logging.getLogger("django_pgpubsub.hub")

Batch = list[tuple[Subscription, Event]]


def dispatch(
    events: Iterable[Event],
    subscribers: Mapping[str, Iterable[Subscription]] | Iterable[Subscription],
    release: Callable[[Subscription], None],
) -> None:
    """Deliver each event to the subscribers of its channel (``subscribers``
    by channel), or to every one of ``subscribers`` (an iterable of them).

    A subscriber whose loop is closed is nobody's any more: ``release`` it.
    """
    batches: dict[asyncio.AbstractEventLoop | None, Batch] = {}
    everyone = None if isinstance(subscribers, Mapping) else list(subscribers)
    for event in events:
        receivers = everyone if everyone is not None else subscribers.get(event.channel, ())  # type: ignore[union-attr]
        for subscription in receivers:
            batches.setdefault(subscription.loop, []).append((subscription, event))
    for loop, batch in batches.items():
        if loop is None:  # a receiver that runs on the hub's thread
            deliver(batch)
            continue
        try:
            loop.call_soon_threadsafe(deliver, batch)
        except RuntimeError:  # its loop is closed
            for subscription, _ in batch:
                release(subscription)


def deliver(batch: Batch) -> None:
    """Deliver a batch, on the subscribers' loop; one failing subscriber spoils nothing."""
    for subscription, event in batch:
        try:
            subscription.deliver(event)
        except Exception:
            logger.exception("A hub subscriber failed to take an event of %r.", event.channel)


def fail(subscriptions: Iterable[Subscription], error: ConnectionLost) -> None:
    """End every subscription with ``error``, each on its loop."""
    for subscription in subscriptions:
        if subscription.loop is None:
            subscription.fail(error)
        else:
            with contextlib.suppress(RuntimeError):
                subscription.loop.call_soon_threadsafe(subscription.fail, error)
