"""How the Channels layer sends: through PostgreSQL for other processes, straight into its own
inbox for its own channels, in a sync caller's transaction when the caller waits in one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import AsyncToSync, sync_to_async
from django.db import connections

from django_pgpubsub.channel_layer import messages
from django_pgpubsub.channel_layer.drops import DROPS
from django_pgpubsub.hub.hub import get_hub

_UNKNOWN = object()

Statement = tuple[str, tuple[Any, ...]]
# Hands a message to the sending layer's own channels; returns the full ones.
Local = Callable[[], list[str]]
# What sends a message through PostgreSQL alone, the layer's own channels included.
Alone = Callable[[], Statement]


def sync_caller_waits() -> bool | None:
    """Whether the running coroutine was started by ``async_to_sync`` for a sync
    thread that waits for it; None when asgiref no longer says."""
    executors = getattr(AsyncToSync, "executors", _UNKNOWN)
    if executors is _UNKNOWN:
        return None
    return getattr(executors, "current", None) is not None


def statement(target: str, text: str, expiry: float, origin: str | None = None) -> Statement:
    """The SQL that sends ``text`` on the PostgreSQL channel ``target``: a
    NOTIFY, or past NOTIFY's limit a stored row and the NOTIFY of its id;
    tagged with ``origin`` (the sending layer) if given."""
    if origin is not None:
        tagged = messages.tagged(text, origin)
        if messages.fits(tagged):
            return messages.NOTIFY, (target, tagged)
        return messages.STORE, (text, float(expiry), target, f"@{origin}")
    if messages.fits(text):
        return messages.NOTIFY, (target, text)
    return messages.STORE, (text, float(expiry), target, "")


async def send(
    using: str,
    sql: Statement | None,
    local: Local | None,
    *,
    immediate: bool,
    alone: Alone | None = None,
) -> list[str]:
    """Send a message: ``sql`` through PostgreSQL, ``local`` into this layer's
    own channels; at once, or, when a sync caller waits and ``immediate`` is
    false, on the caller's thread, in its transaction on ``using`` if one is
    open (``sql`` on its connection, ``local`` at its commit).

    Args:
        using: The layer's ``DATABASES`` alias (its hub's, and the transaction's).
        sql: What sends the message through PostgreSQL, if anything.
        local: What hands it to this layer's own channels, if anything.
        immediate: Send at once, even inside a transaction.
        alone: Needed with ``local``: what sends the message through
            PostgreSQL alone, ``local``'s channels included, for a transaction
            that Django cannot follow to its commit (``set_autocommit(False)``).

    Returns:
        The channels that ``local`` found full (none when it waits for a commit).
    """
    if not immediate and sync_caller_waits() is not False:
        return await sync_to_async(_in_caller, thread_sensitive=True)(using, sql, local, alone)
    if sql is not None:
        await get_hub(using).execute(*sql)
    return local() if local is not None else []


async def query(using: str, sql: Statement, *, immediate: bool) -> list[Any]:
    """Run ``sql`` as :func:`send` would send a message, and return its rows."""
    if not immediate and sync_caller_waits() is not False:
        return await sync_to_async(_query_in_caller, thread_sensitive=True)(using, sql)
    return await get_hub(using).execute(*sql)


def _query_in_caller(using: str, sql: Statement) -> list[Any]:
    with connections[using].cursor() as cursor:
        cursor.execute(*sql)
        return list(cursor.fetchall())


def _in_caller(
    using: str, sql: Statement | None, local: Local | None, alone: Alone | None
) -> list[str]:
    connection = connections[using]
    if local is not None and not connection.in_atomic_block and not _autocommit(connection):
        # Manual transaction management: Django has no on_commit() there, but
        # a NOTIFY still waits for the commit; this layer's tap delivers it.
        assert alone is not None, "a local delivery comes with its NOTIFY"
        sql, local = alone(), None
    if sql is not None:
        with connection.cursor() as cursor:
            cursor.execute(*sql)
    if local is None:
        return []
    if connection.in_atomic_block:
        connection.on_commit(lambda: DROPS.dropped(local()))
        return []
    return local()


def _autocommit(connection: Any) -> bool:
    """Whether ``connection`` is in autocommit mode, without connecting to learn it."""
    if connection.connection is None:
        return bool(connection.settings_dict["AUTOCOMMIT"])
    return bool(connection.get_autocommit())
