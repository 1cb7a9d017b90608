"""Eager mode on a Django connection: the session's table of what was published,
switched on and off, and handled at commit by production's code.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from django_pgpubsub import conf
from django_pgpubsub.db.connection import database_wrapper, fetch_rows
from django_pgpubsub.db.sql import OUTBOX_TABLE
from django_pgpubsub.durable.claim import run_now
from django_pgpubsub.publishing.triggers import EAGER_SETTING, EAGER_TABLE
from django_pgpubsub.testing.published import Published
from django_pgpubsub.vocabulary.events import DurableEvent, Event
from django_pgpubsub.vocabulary.handlers import Registry, handler_name
from django_pgpubsub.vocabulary.tracing import processing, unwrap_plain

# Table and setting go together: both are undone by the same rollback.
CREATE_SQL = f"""
CREATE TEMP TABLE IF NOT EXISTS {EAGER_TABLE} (
    n bigserial PRIMARY KEY,
    channel text,
    payload text,
    outbox_id bigint,
    pid integer NOT NULL DEFAULT pg_backend_pid()
)
"""
ARMED_SQL = f"""
SELECT coalesce(current_setting('{EAGER_SETTING}', true), '') = 'on'
    AND to_regclass('pg_temp.{EAGER_TABLE}') IS NOT NULL
"""
SET_SQL = f"SELECT set_config('{EAGER_SETTING}', %s, false)"

RECORD_SQL = f"""
INSERT INTO pg_temp.{EAGER_TABLE} (channel, payload)
SELECT c, p FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(c, p, i) ORDER BY i
RETURNING n
"""

# The durable events this session stored last: the outbox ids only grow, and
# no other live session has this backend's pid.
RECORD_STORED_SQL = f"""
INSERT INTO pg_temp.{EAGER_TABLE} (outbox_id)
SELECT id FROM (
    SELECT id FROM {OUTBOX_TABLE} WHERE sender_pid = pg_backend_pid() ORDER BY id DESC LIMIT %s
) AS stored ORDER BY id
RETURNING n
"""

NEWEST_SQL = f"SELECT max(n) FROM pg_temp.{EAGER_TABLE}"
COUNT_SQL = f"SELECT count(*) FROM pg_temp.{EAGER_TABLE}"

TAKE_SQL = f"""
DELETE FROM pg_temp.{EAGER_TABLE} WHERE n <= %s
RETURNING n, channel, payload, outbox_id, pid
"""

# The durable events stored, as they are now (in id order).
OUTBOX_ROWS_SQL = f"""
SELECT id, channel, payload, sender_pid, attempts FROM {OUTBOX_TABLE}
WHERE id = ANY(%s::bigint[]) ORDER BY id
"""

COUNT_CHANNELS_SQL = f"""
SELECT count(*) FROM pg_temp.{EAGER_TABLE} AS e
LEFT JOIN {OUTBOX_TABLE} AS o ON o.id = e.outbox_id
WHERE coalesce(e.channel, o.channel) = ANY(%s::text[])
"""


@dataclass(eq=False)
class Recorder:
    """One active block.

    Attributes:
        published: Where the events seen are appended.
        handlers: The registry whose handlers run at commit; None for a block
            that only records (``capture_events`` inside a transaction).
        channels: The channels recorded; None for all.
        propagate: Raise the first handler error at the end of the commit.
    """

    published: Published
    handlers: Registry | None
    channels: frozenset[str] | None
    propagate: bool

    def record(self, event: Event) -> None:
        if self.channels is None or event.channel in self.channels:
            self.published.append(event)


recorders: ContextVar[tuple[Recorder, ...]] = ContextVar("pgpubsub_eager", default=())
"""The active blocks, innermost last."""


def push(recorder: Recorder) -> None:
    recorders.set((*recorders.get(), recorder))


def pop(recorder: Recorder) -> None:
    recorders.set(tuple(active for active in recorders.get() if active is not recorder))


def runner() -> Recorder | None:
    """The innermost block that runs handlers, if any."""
    for recorder in reversed(recorders.get()):
        if recorder.handlers is not None:
            return recorder
    return None


logger = logging.getLogger("django_pgpubsub.testing")


class Drain:
    """The ``on_commit`` callback that handles the events published up to ``upto``."""

    def __init__(self, alias: str, upto: int) -> None:
        self.alias = alias
        self.upto = upto

    def __repr__(self) -> str:
        return f"<django_pgpubsub eager: events up to #{self.upto} on {self.alias!r}>"

    def __call__(self) -> None:
        active = recorders.get()
        if not active:
            return
        rows = sorted(fetch_rows(self.alias, TAKE_SQL, (self.upto,)))
        running = runner()
        errors: list[BaseException] = []
        durable: list[int] = []  # a run of durable events, handled together
        for _, channel, sent, outbox_id, pid in rows:
            if outbox_id is not None:
                durable.append(outbox_id)
                continue
            if durable:
                errors.extend(_run_durable(self.alias, active, running, durable))
                durable = []
            # As the listener does: a context sent with TRACE_PLAIN_EVENTS taken off.
            payload, headers = unwrap_plain(sent)
            event = Event(channel, payload, pid)
            for recorder in active:
                recorder.record(event)
            if running is not None:
                errors.extend(_run_plain(running, event, headers))
        if durable:
            errors.extend(_run_durable(self.alias, active, running, durable))
        if errors and running is not None and running.propagate:
            raise errors[0]


def _failed(running: Recorder, event: Event, name: str, exc: BaseException) -> None:
    running.published.errors.append(exc)
    if not running.propagate:
        logger.exception(
            "Handler %s failed on channel %r (eager mode).",
            name,
            event.channel,
            exc_info=exc,
        )


def _run_plain(running: Recorder, event: Event, headers: str | None) -> list[BaseException]:
    assert running.handlers is not None
    errors: list[BaseException] = []
    functions = running.handlers.sync_handlers(event.channel)
    # The listener's consumer span, as listen_events makes it.
    with processing(event, functions, headers) as span:
        for function in functions:
            try:
                with transaction.atomic(using=conf.database()):
                    function(event)
            except Exception as exc:
                span.failed(exc)
                errors.append(exc)
                _failed(running, event, handler_name(function), exc)
    return errors


def _run_durable(
    alias: str, active: tuple[Recorder, ...], running: Recorder | None, ids: list[int]
) -> list[BaseException]:
    """Handle the durable events ``ids`` with the listener's own cycle
    (:func:`django_pgpubsub.durable.claim.run_now`)."""
    rows = fetch_rows(alias, OUTBOX_ROWS_SQL, (ids,))
    registry = running.handlers if running is not None else None
    handlers = (
        {channel: registry.sync_handlers(channel) for _, channel, *_ in rows} if registry else {}
    )
    for row_id, channel, payload, sender_pid, attempts in rows:
        started = attempts + 1 if handlers.get(channel) else attempts
        event = DurableEvent(channel, payload, sender_pid, row_id, started)
        for recorder in active:
            recorder.record(event)
    if running is None or not handlers:
        # No listener of these channels here: they stay pending, as in production.
        return []
    errors: list[BaseException] = []
    for failure in run_now(alias, [row[0] for row in rows], handlers):
        error = failure.exception or RuntimeError(failure.error)
        errors.append(error)
        _failed(running, failure.event, failure.handler, error)
    return errors


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
    [(armed,)] = fetch_rows(connection.alias, ARMED_SQL)
    if not armed:
        fetch_rows(connection.alias, CREATE_SQL)
        fetch_rows(connection.alias, SET_SQL, ("on",))
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
        [(newest,)] = fetch_rows(connection.alias, NEWEST_SQL)
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
        rows = fetch_rows(connection.alias, RECORD_SQL, (channels, payloads))
    elif stored:
        rows = fetch_rows(connection.alias, RECORD_STORED_SQL, (stored,))
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
        fetch_rows(alias, SET_SQL, ("",))


def pending(alias: str, channels: list[str] | None = None) -> int:
    """How many events published on ``alias`` wait for a commit (of ``channels``)."""
    connection = connections[alias]
    if getattr(connection, _STATE, None) is None or connection.needs_rollback:
        return 0
    if channels is None:
        [(count,)] = fetch_rows(alias, COUNT_SQL)
    else:
        [(count,)] = fetch_rows(alias, COUNT_CHANNELS_SQL, (channels,))
    return int(count)
