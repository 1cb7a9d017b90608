"""Publishing on Django's own connections, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, overload

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import ProgrammingError

from django_pgpubsub import conf
from django_pgpubsub.db import sql
from django_pgpubsub.db.connection import (
    execute_in_transaction,
    outbox_missing,
    require_psycopg3,
)
from django_pgpubsub.exceptions import InvalidPayload
from django_pgpubsub.vocabulary.channel_names import validate_channel
from django_pgpubsub.vocabulary.payload import encode_payload
from django_pgpubsub.vocabulary.tracing import sending, wrap_plain, wrap_plain_many

EagerHook = Callable[[str | None, list[str], list[str], int | None], None]
eager_hook: EagerHook | None = None
"""Set by :func:`django_pgpubsub.testing.eager` while it runs, None otherwise:
called after each send with ``(using, channels, payloads, stored)``, where
``stored`` is None for plain events and the count stored for durable ones."""


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key or "\x00" in key:
        raise InvalidPayload(
            f"An idempotency key must be a non-empty str without NUL, not {key!r}."
        )
    return key


# Bytes: a key is compared and indexed (the ordering keys' B-tree indexes take
# entries up to about 2700 bytes); no real key needs more.
ORDERING_KEY_MAX_BYTES = 1024


def _check_ordering_key(ordering_key: object) -> str:
    if (
        not isinstance(ordering_key, str)
        or not ordering_key
        or "\x00" in ordering_key
        or len(ordering_key.encode("utf-8", "surrogatepass")) > ORDERING_KEY_MAX_BYTES
    ):
        raise InvalidPayload(
            "An ordering key must be a non-empty str without NUL, of at most "
            f"{ORDERING_KEY_MAX_BYTES} bytes in UTF-8, not {ordering_key!r:.80}."
        )
    try:
        ordering_key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPayload(
            f"An ordering key must be valid UTF-8: {ordering_key!r:.80}."
        ) from None
    return ordering_key


def _check_durable(using: str | None) -> None:
    outbox = conf.database()
    if using is not None and using != outbox:
        raise ImproperlyConfigured(
            f"Durable events are stored in the outbox of PGPUBSUB['DATABASE'] "
            f"({outbox!r}), where listeners claim them; with using={using!r} they "
            "would be stored where no listener looks. Leave using= out, or set "
            f"PGPUBSUB['DATABASE'] to {using!r}."
        )


def _store(using: str | None, store: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Run a statement that stores durable events; OutboxMissing before migrate."""
    try:
        return execute_in_transaction(using, store, params, fetch=True)
    except ProgrammingError as exc:
        missing = outbox_missing(exc, using)
        if missing is None:
            raise
        raise missing from exc


@overload
def notify(
    channel: str,
    payload: Any = "",
    *,
    using: str | None = None,
    durable: Literal[False] = False,
    key: None = None,
    ordering_key: None = None,
) -> None: ...


@overload
def notify(
    channel: str,
    payload: Any = "",
    *,
    using: str | None = None,
    durable: Literal[True],
    key: str | None = None,
    ordering_key: str | None = None,
) -> bool: ...


@overload
def notify(
    channel: str,
    payload: Any = "",
    *,
    using: str | None = None,
    durable: bool = False,
    key: str | None = None,
    ordering_key: str | None = None,
) -> bool | None: ...


def notify(
    channel: str,
    payload: Any = "",
    *,
    using: str | None = None,
    durable: bool = False,
    key: str | None = None,
    ordering_key: str | None = None,
) -> bool | None:
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
        key: Idempotency key of a durable event: nothing is stored while an
            event with the same key is pending or running.
        ordering_key: Durable events with the same ordering key run one at
            a time, in the order they were stored (id order), across every
            listener. Storing one waits until the transactions that stored
            earlier events of its key have committed (a lock on the key), so
            id order is their commit order. A failed attempt holds the key's later events back
            until it succeeds or fails for good (see
            ``ORDERING_ON_DEAD_LETTER``). Events with different keys, or
            none, still run in parallel.

    Returns:
        None for a plain event. For a durable one, True when it was stored;
        False when an event with the same ``key`` was waiting (pending or
        running), and nothing was stored.

    Raises:
        InvalidChannel: The channel name is unusable.
        PayloadTooLarge: The payload is 8000 bytes or more (plain events only).
        InvalidPayload: The payload has a NUL byte or a lone surrogate, or is
            not JSON serialisable, or ``key`` is not a non-empty str, or
            ``ordering_key`` is not a non-empty str without NUL of at most
            1024 bytes (or either is given without ``durable``).
        ImproperlyConfigured: ``using`` is not PostgreSQL, or ``durable`` with
            ``using`` other than the ``DATABASE`` setting (the outbox's).
        OutboxMissing: ``durable``, and the outbox table is not there:
            ``python manage.py migrate django_pgpubsub`` has not run. A
            ``django.db.ProgrammingError``, as the error it translates.
    """
    channel = validate_channel(channel)
    # The producer span, when the application traces: its context is stored
    # beside a durable event's payload (headers), never in it.
    with sending([channel], durable=durable) as span:
        if durable:
            _check_durable(using)
            text = encode_payload(payload, limit_size=False)
            if key is not None:
                key = _check_key(key)
            if ordering_key is not None:
                ordering_key = _check_ordering_key(ordering_key)
            # Poll mode: no NOTIFY, so the commit takes no cluster-wide lock.
            quiet = conf.durable_wakeup() == "poll"
            if ordering_key is None:
                store = sql.STORE_QUIET_SQL if quiet else sql.STORE_SQL
                params: tuple[str | None, ...] = (channel, text, key, span.headers)
            else:
                store = sql.STORE_ORDERED_QUIET_SQL if quiet else sql.STORE_ORDERED_SQL
                params = (channel, text, key, ordering_key, span.headers)
            row = _store(using, store, params)
            if eager_hook is not None:
                eager_hook(using, [channel], [text], int(bool(row and row[0])))
            return bool(row and row[0])
        if key is not None:
            raise InvalidPayload("key= is for durable events: pass durable=True too.")
        if ordering_key is not None:
            raise InvalidPayload(
                "ordering_key= is for durable events (plain NOTIFY has no order to keep "
                "across listeners): pass durable=True too."
            )
        # TRACE_PLAIN_EVENTS: the context in front, for listen_events to take off.
        text = wrap_plain(encode_payload(payload), span.headers)
        execute_in_transaction(using, sql.NOTIFY_SQL, (channel, text))
        if eager_hook is not None:
            eager_hook(using, [channel], [text], None)
        return None


def _notify(channel: str, payload: Any, using: str | None, options: dict[str, Any]) -> bool | None:
    sent: bool | None = notify(channel, payload, using=using, **options)
    return sent


_notify_in_sync_thread = sync_to_async(_notify, thread_sensitive=True)


async def anotify(
    channel: str,
    payload: Any = "",
    *,
    using: str | None = None,
    durable: bool = False,
    key: str | None = None,
    ordering_key: str | None = None,
) -> bool | None:
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
        key: Idempotency key of a durable event, as for :func:`notify`.
        ordering_key: Ordering key of a durable event, as for :func:`notify`.

    Returns:
        As :func:`notify`: None for a plain event; for a durable one, whether
        it was stored.

    Raises:
        ImproperlyConfigured: Django uses psycopg2 (the async API needs psycopg 3).
        InvalidChannel: The channel name is unusable.
        PayloadTooLarge: The payload is 8000 bytes or more (plain events only).
        InvalidPayload: The payload has a NUL byte or is not JSON serialisable.
        OutboxMissing: ``durable``, and the outbox table is not there (as for
            :func:`notify`).
    """
    require_psycopg3("anotify()")
    validate_channel(channel)
    options = {"durable": durable, "key": key, "ordering_key": ordering_key}
    return await _notify_in_sync_thread(channel, payload, using, options)


def notify_many(
    items: Iterable[
        tuple[str, Any] | tuple[str, Any, str | None] | tuple[str, Any, str | None, str | None]
    ],
    *,
    using: str | None = None,
    durable: bool = False,
) -> int:
    """Send many notifications in one round trip, in the current transaction.

    Every item is checked before anything is sent: one bad item sends nothing.
    PostgreSQL delivers identical (channel, payload) pairs of one transaction
    once (durable events are each delivered).

    Args:
        items: ``(channel, payload)`` pairs, payloads as for :func:`notify`;
            durable items may be ``(channel, payload, key)`` triples, with an
            idempotency key (or None) as for :func:`notify`, or
            ``(channel, payload, key, ordering_key)`` quadruples, with an
            ordering key (or None) too. Items of one key are stored in the
            order given, so they run in that order.
        using: The database alias; default the ``DATABASE`` setting.
        durable: Store them in the outbox, as :func:`notify` does.

    Returns:
        How many notifications were sent or stored: durable items whose key
        is already waiting (or repeated in ``items``) are not counted.

    Raises:
        InvalidChannel: A channel name is unusable.
        PayloadTooLarge: A payload is 8000 bytes or more.
        InvalidPayload: A payload has a NUL byte or a lone surrogate, or is not
            JSON serialisable, or a key or ordering key is unusable (or given
            without ``durable``).
        ImproperlyConfigured: As for :func:`notify`.
        OutboxMissing: ``durable``, and the outbox table is not there (as for
            :func:`notify`).
    """
    if durable:
        _check_durable(using)
    channels: list[str] = []
    payloads: list[str] = []
    keys: list[str | None] = []
    ordering_keys: list[str | None] = []
    for item in items:
        channels.append(validate_channel(item[0]))
        payloads.append(encode_payload(item[1], limit_size=not durable))
        key = item[2] if len(item) > 2 else None
        if key is not None:
            if not durable:
                raise InvalidPayload("Keys are for durable events: pass durable=True too.")
            key = _check_key(key)
        keys.append(key)
        ordering_key = item[3] if len(item) > 3 else None
        if ordering_key is not None:
            if not durable:
                raise InvalidPayload("Ordering keys are for durable events: pass durable=True too.")
            ordering_key = _check_ordering_key(ordering_key)
        ordering_keys.append(ordering_key)
    if not channels:
        return 0
    with sending(channels, durable=durable, batch=True) as span:
        if not durable:
            payloads = wrap_plain_many(payloads, span.headers)
            execute_in_transaction(using, sql.NOTIFY_MANY_SQL, (channels, payloads))
            if eager_hook is not None:
                eager_hook(using, channels, payloads, None)
            return len(channels)
        quiet = conf.durable_wakeup() == "poll"
        if any(ordering_key is not None for ordering_key in ordering_keys):
            store = sql.STORE_MANY_ORDERED_QUIET_SQL if quiet else sql.STORE_MANY_ORDERED_SQL
            params: tuple[Any, ...] = (channels, payloads, keys, ordering_keys, span.headers)
        else:
            store = sql.STORE_MANY_QUIET_SQL if quiet else sql.STORE_MANY_SQL
            params = (channels, payloads, keys, span.headers)
        row = _store(using, store, params)
        if eager_hook is not None:
            eager_hook(using, channels, payloads, int(row[0]) if row else 0)
        return int(row[0]) if row else 0
