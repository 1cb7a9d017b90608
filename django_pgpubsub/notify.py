"""Publishing on Django's own connections, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured

from django_pgpubsub import conf
from django_pgpubsub.channels import validate_channel
from django_pgpubsub.connection import execute_in_transaction, require_psycopg3
from django_pgpubsub.outbox import STORE_MANY_SQL, STORE_SQL
from django_pgpubsub.payload import encode_payload

NOTIFY_SQL = "SELECT pg_notify(%s, %s)"
# unnest() of two arrays walks them side by side, in order: one round trip.
NOTIFY_MANY_SQL = "SELECT count(pg_notify(c, p)) FROM unnest(%s::text[], %s::text[]) AS t(c, p)"


def _check_durable(using: str | None) -> None:
    outbox = conf.database()
    if using is not None and using != outbox:
        raise ImproperlyConfigured(
            f"Durable events are stored in the outbox of PGPUBSUB['DATABASE'] "
            f"({outbox!r}), where listeners claim them; with using={using!r} they "
            "would be stored where no listener looks. Leave using= out, or set "
            f"PGPUBSUB['DATABASE'] to {using!r}."
        )


def notify(
    channel: str, payload: Any = "", *, using: str | None = None, durable: bool = False
) -> None:
    """Send a notification in the current transaction of ``using``.

    Inside ``transaction.atomic()`` it is delivered when the transaction
    commits and dropped if it rolls back; outside, at once.

    Args:
        channel: The channel name.
        payload: A ``str`` is sent as is; anything else as compact JSON.
        using: The database alias; default the ``DATABASE`` setting.
        durable: Store the event in the outbox table, in the same
            transaction, until a listener has handled it: at-least-once
            delivery, and no size limit on the payload.

    Raises:
        InvalidChannel: The channel name is unusable.
        PayloadTooLarge: The payload is 8000 bytes or more (plain events only).
        InvalidPayload: The payload has a NUL byte or a lone surrogate, or is
            not JSON serialisable.
        ImproperlyConfigured: ``using`` is not PostgreSQL, or ``durable`` with
            ``using`` other than the ``DATABASE`` setting (the outbox's).
    """
    channel = validate_channel(channel)
    if durable:
        _check_durable(using)
        text = encode_payload(payload, limit_size=False)
        execute_in_transaction(using, STORE_SQL, (channel, text, channel))
    else:
        execute_in_transaction(using, NOTIFY_SQL, (channel, encode_payload(payload)))


_notify_in_sync_thread = sync_to_async(notify, thread_sensitive=True)


async def anotify(
    channel: str, payload: Any = "", *, using: str | None = None, durable: bool = False
) -> None:
    """:func:`notify` for async code: runs it where Django runs async ORM calls.

    Like Django's own async ORM methods, it runs :func:`notify` through
    ``sync_to_async`` (thread-sensitive), so it is in autocommit and is
    delivered at once. To publish inside a transaction from async code, put
    the transaction and :func:`notify` in one sync function and call that
    through ``sync_to_async``.

    Args:
        channel: The channel name.
        payload: A ``str`` is sent as is; anything else as compact JSON.
        using: The database alias; default the ``DATABASE`` setting.
        durable: Store the event in the outbox, as :func:`notify` does.

    Raises:
        ImproperlyConfigured: Django uses psycopg2 (the async API needs psycopg 3).
        InvalidChannel: The channel name is unusable.
        PayloadTooLarge: The payload is 8000 bytes or more (plain events only).
        InvalidPayload: The payload has a NUL byte or is not JSON serialisable.
    """
    require_psycopg3("anotify()")
    validate_channel(channel)
    await _notify_in_sync_thread(channel, payload, using=using, durable=durable)


def notify_many(
    items: Iterable[tuple[str, Any]], *, using: str | None = None, durable: bool = False
) -> int:
    """Send many notifications in one round trip, in the current transaction.

    Every item is checked before anything is sent: one bad item sends nothing.
    PostgreSQL delivers identical (channel, payload) pairs of one transaction
    once (durable events are each delivered).

    Args:
        items: ``(channel, payload)`` pairs, payloads as for :func:`notify`.
        using: The database alias; default the ``DATABASE`` setting.
        durable: Store them in the outbox, as :func:`notify` does.

    Returns:
        How many notifications were sent.

    Raises:
        InvalidChannel: A channel name is unusable.
        PayloadTooLarge: A payload is 8000 bytes or more.
        InvalidPayload: A payload has a NUL byte or a lone surrogate, or is not
            JSON serialisable.
        ImproperlyConfigured: As for :func:`notify`.
    """
    if durable:
        _check_durable(using)
    channels: list[str] = []
    payloads: list[str] = []
    for channel, payload in items:
        channels.append(validate_channel(channel))
        payloads.append(encode_payload(payload, limit_size=not durable))
    if not channels:
        return 0
    execute_in_transaction(
        using, STORE_MANY_SQL if durable else NOTIFY_MANY_SQL, (channels, payloads)
    )
    return len(channels)
