"""``dispatch``: a channel's handlers, run now, as the listener would run them."""

from __future__ import annotations

import itertools
from typing import Any

from django_pgpubsub.vocabulary.channel_names import validate_channel
from django_pgpubsub.vocabulary.events import DurableEvent, Event
from django_pgpubsub.vocabulary.handlers import Registry, registry
from django_pgpubsub.vocabulary.payload import encode_payload

_ids = itertools.count(1)


def dispatch(
    channel: str | Event,
    payload: Any = "",
    *,
    handlers: Registry = registry,
    durable: bool = False,
    id: int | None = None,
    attempt: int = 1,
) -> Event:
    """Run the handlers of a channel now, in this process, as the listener would.

    Unlike the listener, an exception from a handler propagates, so a test sees
    it. ``async def`` handlers are run to completion.

    Args:
        channel: The channel; or a whole :class:`~django_pgpubsub.Event` (or
            :class:`~django_pgpubsub.DurableEvent`), passed as it is.
        payload: Encoded as :func:`~django_pgpubsub.notify` would encode it.
        handlers: The registry; default the global one.
        durable: Build a :class:`~django_pgpubsub.DurableEvent` (also when
            ``id`` is given), as a durable handler receives.
        id: The durable event's ``id``; default a new number, unique in this
            process (no outbox row has to exist: use ``eager()`` for that).
        attempt: The durable event's ``attempt``.

    Returns:
        The event the handlers received (``pid`` 0 unless passed in).

    Raises:
        LookupError: No handler is registered for the channel.
        TypeError: An event was passed together with other arguments.
    """
    if isinstance(channel, Event):
        if payload != "" or durable or id is not None or attempt != 1:
            raise TypeError("dispatch(event) takes the event alone: it is passed as it is.")
        event = channel
    else:
        name, text = validate_channel(channel), encode_payload(payload, limit_size=not durable)
        if durable or id is not None:
            event = DurableEvent(name, text, 0, next(_ids) if id is None else id, attempt)
        else:
            event = Event(name, text, 0)
    functions = handlers.sync_handlers(event.channel)
    if not functions:
        raise LookupError(f"No handler is registered for channel {event.channel!r}.")
    for function in functions:
        function(event)
    return event
