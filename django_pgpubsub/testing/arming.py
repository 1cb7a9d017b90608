"""Eager mode on one Django connection: switched on, watched, switched off.

Arming a connection creates the session's temporary table of events and sets
``pgpubsub.eager`` to ``'on'`` for the session (inside a transaction, as in
``TestCase``, its rollback undoes both). Then:

- ``notify()`` and ``notify_many()`` call :func:`on_notify` (the one hook in
  :mod:`django_pgpubsub.publishing.notify`), which writes what they sent into the table;
- the ``publish_changes`` triggers write theirs while the setting is on;
- after every statement on the connection, an ``execute_wrapper`` looks for
  rows newer than those already covered, and registers an ``on_commit``
  callback (:class:`~django_pgpubsub.testing.run.Drain`) that handles them.

So each statement that published adds one ``on_commit`` callback, exactly
where ``transaction.on_commit()`` would have put it: rolled-back savepoints
drop it (and their rows), ``captureOnCommitCallbacks(execute=True)`` runs it,
and in autocommit it runs at once. The extra statements are sent on the
driver's connection, past Django's cursor, so ``assertNumQueries`` does not
count them.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from django_pgpubsub import conf
from django_pgpubsub.db.connection import database_wrapper, fetch_rows
from django_pgpubsub.testing import sql as eager_sql
from django_pgpubsub.testing.recorder import recorders
from django_pgpubsub.testing.run import Drain

# The module, not the function that django_pgpubsub re-exports under its name.
notify_module = importlib.import_module("django_pgpubsub.publishing.notify")

_STATE = "_django_pgpubsub_eager"
_INERROR = 3  # libpq's PQTRANS_INERROR, in both drivers' transaction_status


class _HookUsers:
    """How many connections (of any thread) are armed: the hook stays set until none is."""

    lock = threading.Lock()
    count = 0

    @classmethod
    def add(cls, change: int) -> None:
        with cls.lock:
            cls.count += change
            # The module's hook, read by notify() as a global.
            setattr(notify_module, "eager_hook", on_notify if cls.count else None)  # noqa: B010


class _Armed:
    """Eager mode on one connection."""

    def __init__(self) -> None:
        self.count = 0
        self.covered = 0  # the newest row an on_commit callback handles
        self.raw: Any = None  # the driver connection armed


def _ensure(connection: BaseDatabaseWrapper, state: _Armed) -> None:
    """The table and the setting exist on the connection's current session."""
    connection.ensure_connection()
    [(armed,)] = fetch_rows(connection.alias, eager_sql.ARMED_SQL)
    if not armed:
        fetch_rows(connection.alias, eager_sql.CREATE_SQL)
        fetch_rows(connection.alias, eager_sql.SET_SQL, ("on",))
    state.raw = connection.connection


def _schedule(connection: BaseDatabaseWrapper, state: _Armed, newest: int | None) -> None:
    if newest is not None and newest > state.covered:
        state.covered = newest
        transaction.on_commit(Drain(connection.alias, newest), using=connection.alias)


def _watch(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """The ``execute_wrapper``: after each statement, schedule what it published."""
    result = execute(sql, params, many, context)
    connection = context["connection"]
    state: _Armed | None = getattr(connection, _STATE, None)
    if state is not None and recorders.get():
        if connection.connection is not state.raw:  # reconnected (in autocommit)
            _ensure(connection, state)
        [(newest,)] = fetch_rows(connection.alias, eager_sql.NEWEST_SQL)
        _schedule(connection, state, newest)
    return result


def on_notify(
    using: str | None, channels: list[str], payloads: list[str], stored: int | None
) -> None:
    """``notify``'s eager hook: record what was just sent on an armed connection."""
    connection = connections[using or conf.database()]
    state: _Armed | None = getattr(connection, _STATE, None)
    if state is None or not recorders.get():
        return
    if stored is None:
        rows = fetch_rows(connection.alias, eager_sql.RECORD_SQL, (channels, payloads))
    elif stored:
        rows = fetch_rows(connection.alias, eager_sql.RECORD_STORED_SQL, (stored,))
    else:
        return  # a durable event whose key was waiting: nothing was stored
    _schedule(connection, state, max(n for (n,) in rows))


def arm(alias: str) -> None:
    """Switch eager mode on for Django's connection ``alias`` (nested: counted)."""
    connection = database_wrapper(alias)
    state: _Armed | None = getattr(connection, _STATE, None)
    if state is None:
        state = _Armed()
        _ensure(connection, state)
        setattr(connection, _STATE, state)
        connection.execute_wrappers.append(_watch)
        _HookUsers.add(1)
    state.count += 1


def disarm(alias: str) -> None:
    """Undo one :func:`arm`; the last one switches eager mode off."""
    connection = connections[alias]
    state: _Armed | None = getattr(connection, _STATE, None)
    if state is None:
        return
    state.count -= 1
    if state.count:
        return
    delattr(connection, _STATE)
    if _watch in connection.execute_wrappers:
        connection.execute_wrappers.remove(_watch)
    _HookUsers.add(-1)
    raw = connection.connection
    # A broken transaction's rollback undoes the setting made inside it.
    usable = raw is not None and not connection.needs_rollback
    if usable and raw.info.transaction_status != _INERROR:
        fetch_rows(alias, eager_sql.SET_SQL, ("",))


def pending(alias: str, channels: list[str] | None = None) -> int:
    """How many events published on ``alias`` wait for a commit (of ``channels``)."""
    connection = connections[alias]
    if getattr(connection, _STATE, None) is None or connection.needs_rollback:
        return 0
    if channels is None:
        [(count,)] = fetch_rows(alias, eager_sql.COUNT_SQL)
    else:
        [(count,)] = fetch_rows(alias, eager_sql.COUNT_CHANNELS_SQL, (channels,))
    return int(count)
