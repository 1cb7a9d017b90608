"""Helpers shared by the tests."""

from __future__ import annotations

import select
import time

from django_pgpubsub import Event, PubSub


def collect(pubsub: PubSub, count: int, timeout: float = 10.0) -> list[Event]:
    """Read ``count`` events, failing the test if they do not come in time."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        event = pubsub.get_event()
        if event is not None:
            events.append(event)
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got {len(events)} of {count} events: {events[-3:]}")
        select.select([pubsub.fileno()], [], [], remaining)
    return events


def nothing_arrives(pubsub: PubSub, wait: float = 0.3) -> bool:
    """True when no event arrives within ``wait`` seconds."""
    select.select([pubsub.fileno()], [], [], wait)
    return pubsub.get_event() is None
