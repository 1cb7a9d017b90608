"""Publishing on Django's own connections, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connections

from django_pgpubsub import conf
from django_pgpubsub.channels import validate_channel
from django_pgpubsub.payload import encode_payload

NOTIFY_SQL = "SELECT pg_notify(%s, %s)"
# unnest() of two arrays walks them side by side, in order: one round trip.
NOTIFY_MANY_SQL = "SELECT count(pg_notify(c, p)) FROM unnest(%s::text[], %s::text[]) AS t(c, p)"


def notify(channel: str, payload: Any = "", *, using: str | None = None) -> None:
    """Send a notification in the current transaction of ``using``.

    Inside ``transaction.atomic()`` it is delivered when the transaction
    commits and dropped if it rolls back; outside, at once.

    Args:
        channel: The channel name.
        payload: A ``str`` is sent as is; anything else as compact JSON.
        using: The database alias; default the ``DATABASE`` setting.

    Raises:
        InvalidChannel: The channel name is unusable.
        PayloadTooLarge: The payload is 8000 bytes or more.
        InvalidPayload: The payload has a NUL byte or is not JSON serialisable.
    """
    args = (validate_channel(channel), encode_payload(payload))
    with connections[using or conf.database()].cursor() as cursor:
        cursor.execute(NOTIFY_SQL, args)


def notify_many(items: Iterable[tuple[str, Any]], *, using: str | None = None) -> int:
    """Send many notifications in one round trip, in the current transaction.

    Every item is checked before anything is sent: one bad item sends nothing.
    PostgreSQL delivers identical (channel, payload) pairs of one transaction
    once.

    Args:
        items: ``(channel, payload)`` pairs, payloads as for :func:`notify`.
        using: The database alias; default the ``DATABASE`` setting.

    Returns:
        How many notifications were sent.

    Raises:
        InvalidChannel: A channel name is unusable.
        PayloadTooLarge: A payload is 8000 bytes or more.
        InvalidPayload: A payload has a NUL byte or is not JSON serialisable.
    """
    channels: list[str] = []
    payloads: list[str] = []
    for channel, payload in items:
        channels.append(validate_channel(channel))
        payloads.append(encode_payload(payload))
    if not channels:
        return 0
    with connections[using or conf.database()].cursor() as cursor:
        cursor.execute(NOTIFY_MANY_SQL, (channels, payloads))
    return len(channels)
