"""How the Channels layer sends: one statement (a NOTIFY, or a stored row and
its NOTIFY), in the caller's transaction when a sync caller waits in one.

``async_to_sync(layer.group_send)(...)`` runs the coroutine on another thread's
event loop while the sync caller waits, perhaps inside ``transaction.atomic()``.
Sent there on the hub's connection, the message would go at once; sent on the
caller's own Django connection, the commit decides. asgiref has no public way
to ask "does a sync thread wait for this coroutine?": its own
``sync_to_async(thread_sensitive=True)`` asks ``AsyncToSync.executors.current``,
and so does :func:`sync_caller_waits`. Should a future asgiref drop that
attribute, every send takes the caller's thread (``sync_to_async``), which is
right in both cases, only slower for async callers; tests/test_layer_sending.py
fails first, so that the change is seen.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import AsyncToSync, sync_to_async
from django.db import connections

from django_pgpubsub.streams import messages
from django_pgpubsub.streams.hub import Hub

_UNKNOWN = object()


def sync_caller_waits() -> bool | None:
    """Whether the running coroutine was started by ``async_to_sync`` for a sync
    thread that waits for it; None when asgiref no longer says."""
    executors = getattr(AsyncToSync, "executors", _UNKNOWN)
    if executors is _UNKNOWN:
        return None
    return getattr(executors, "current", None) is not None


def statement(target: str, text: str, expiry: float) -> tuple[str, tuple[Any, ...]]:
    """The SQL that sends ``text`` on the PostgreSQL channel ``target``: a
    NOTIFY, or past NOTIFY's limit a stored row and the NOTIFY of its id."""
    if messages.fits(text):
        return messages.NOTIFY, (target, text)
    return messages.STORE, (text, float(expiry), target)


async def send(
    hub: Hub, using: str, target: str, text: str, *, expiry: float, immediate: bool
) -> None:
    """Send ``text`` on ``target``: on the hub's connection (at once), or, when
    a sync caller waits and ``immediate`` is false, on the caller's Django
    connection for ``using`` (at its commit inside a transaction)."""
    sql, params = statement(target, text, expiry)
    if not immediate and sync_caller_waits() is not False:
        await sync_to_async(_execute_in_caller, thread_sensitive=True)(using, sql, params)
    else:
        await hub.execute(sql, params)


def _execute_in_caller(using: str, sql: str, params: tuple[Any, ...]) -> None:
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
