"""Helpers for testing code that publishes, and handlers, in your own project.

Django's ``TestCase`` wraps each test in a transaction that never commits, so
PostgreSQL delivers nothing from it: use ``TransactionTestCase`` (or
``pytest.mark.django_db(transaction=True)``) with :func:`capture_events`, or
call handlers directly with :func:`dispatch`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django_pgpubsub.channels import validate_channel
from django_pgpubsub.events import Event
from django_pgpubsub.payload import encode_payload
from django_pgpubsub.pubsub import connect
from django_pgpubsub.registry import Registry, registry


@contextmanager
def capture_events(
    *channels: str, using: str | None = None, timeout: float = 10.0
) -> Iterator[list[Event]]:
    """Collect the events committed on ``channels`` while the block runs.

    The list is filled when the block exits. No sleeping: a marker
    notification is sent after the block, and PostgreSQL delivers in commit
    order, so everything committed before it has arrived when it does.

    Args:
        *channels: The channels to listen on.
        using: The ``DATABASES`` alias; default the ``DATABASE`` setting.
        timeout: Seconds to wait for delivery at the end of the block.

    Raises:
        TimeoutError: The marker did not come back within ``timeout``.
    """
    events: list[Event] = []
    with connect(using) as pubsub:
        marker = f"django_pgpubsub.capture.{pubsub.pid}"
        pubsub.listen(*channels, marker)
        yield events
        pubsub.notify(marker)
        deadline = time.monotonic() + timeout
        for event in pubsub.events(select_timeout=0.1, yield_timeouts=True):
            if event is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"No delivery within {timeout} s.")
                continue
            if event.channel == marker:
                return
            events.append(event)


def dispatch(channel: str, payload: Any = "", *, handlers: Registry = registry) -> Event:
    """Run the handlers of ``channel`` now, in this process, as the listener would.

    Unlike the listener, an exception from a handler propagates, so a test sees
    it. The event's ``pid`` is 0.

    Args:
        channel: The channel.
        payload: Encoded as :func:`~django_pgpubsub.notify` would encode it.
        handlers: The registry; default the global one.

    Returns:
        The event the handlers received.

    Raises:
        LookupError: No handler is registered for ``channel``.
    """
    event = Event(validate_channel(channel), encode_payload(payload), 0)
    functions = handlers.sync_handlers(channel)
    if not functions:
        raise LookupError(f"No handler is registered for channel {channel!r}.")
    for function in functions:
        function(event)
    return event
