"""Connections: dedicated ones opened from Django's settings, and statements on Django's own
(:func:`execute_in_transaction` for senders, :func:`fetch_rows` for the outbox's bookkeeping).
"""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, ProgrammingError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.utils.connection import ConnectionDoesNotExist

from django_pgpubsub import conf
from django_pgpubsub.db.drivers import (
    DriverConnection,
    Psycopg2Connection,
    Psycopg3Connection,
    fetch,
)
from django_pgpubsub.db.listening_connection import lost_errors
from django_pgpubsub.db.sql import OUTBOX_TABLE
from django_pgpubsub.exceptions import ConnectionLost, OutboxMissing


def require_psycopg3(what: str) -> None:
    """Raise ImproperlyConfigured when Django runs on psycopg2: ``what`` is async."""
    if not is_psycopg3:
        raise ImproperlyConfigured(
            f"{what} needs psycopg 3 (its AsyncConnection), but Django is using "
            "psycopg2: pip install 'psycopg[binary]' (Django prefers it when installed)."
        )


def database_wrapper(using: str | None) -> BaseDatabaseWrapper:
    """Return Django's wrapper for ``using``, checking it is PostgreSQL."""
    alias = using or conf.database()
    try:
        wrapper = connections[alias]
    except ConnectionDoesNotExist as exc:
        raise ImproperlyConfigured(
            f"No database {alias!r} in settings.DATABASES; configured aliases "
            f"are {sorted(connections.settings)}."
        ) from exc
    if wrapper.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}] uses {wrapper.vendor}; LISTEN/NOTIFY needs "
            "ENGINE 'django.db.backends.postgresql'."
        )
    return wrapper


# One driver cursor per Django connection, reused: making a Django cursor per
# call costs as much as the round trip itself. Kept on the wrapper with the
# driver connection it belongs to, so a reconnect gets a fresh cursor.
_CURSOR_ATTRIBUTE = "_django_pgpubsub_cursor"


def execute_in_transaction(
    using: str | None, sql: str, params: tuple[Any, ...], *, fetch: bool = False
) -> tuple[Any, ...] | None:
    """Run ``sql`` on Django's connection for ``using``, in its current transaction.

    Django's own cursor (``connection.cursor()``) when anything should see the
    statement: ``DEBUG`` or ``CaptureQueriesContext`` query logging, or an
    ``execute_wrapper()``. Otherwise a driver cursor reused across calls,
    after the checks Django's cursor makes: the health check
    (``CONN_HEALTH_CHECKS``), connecting, refusing a broken transaction; and
    driver errors become Django's (``django.db.utils``), marking the
    connection as errored, as from any query.

    Args:
        using: The alias; default the ``DATABASE`` setting.
        sql: One statement.
        params: Its parameters.
        fetch: Return the first row of the result.

    Returns:
        The first row when ``fetch`` is true, else None.

    Raises:
        ImproperlyConfigured: ``using`` is not a PostgreSQL alias.
    """
    wrapper = connections[using or conf.database()]
    if wrapper.vendor != "postgresql":  # a class attribute: costs next to nothing
        raise ImproperlyConfigured(
            f"DATABASES[{wrapper.alias!r}] uses {wrapper.vendor}, which has no "
            "LISTEN/NOTIFY; pass using= a PostgreSQL alias (default: "
            "PGPUBSUB['DATABASE'])."
        )
    if wrapper.force_debug_cursor or conf.debug() or wrapper.execute_wrappers:
        with wrapper.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() if fetch else None
    # The thread-sharing check of Django's cursor is moot: connections[] is
    # this thread's own. The event-loop check of ensure_connection() still
    # guards async code: there, each context starts without a connection.
    if wrapper.health_check_enabled and not wrapper.health_check_done:  # type: ignore[attr-defined]
        wrapper.close_if_health_check_failed()
    if wrapper.connection is None:
        wrapper.ensure_connection()
    wrapper.validate_no_broken_transaction()
    cached = getattr(wrapper, _CURSOR_ATTRIBUTE, None)
    if cached is None or cached[0] is not wrapper.connection:
        cached = (wrapper.connection, wrapper.connection.cursor())
        setattr(wrapper, _CURSOR_ATTRIBUTE, cached)
    try:
        cached[1].execute(sql, params)
    except Exception:
        # Entered only on failure (it costs on every call otherwise): turns the
        # driver's error into Django's and marks the connection as errored.
        with wrapper.wrap_database_errors:
            raise
    return cached[1].fetchone() if fetch else None


def listening_options(application_name: str) -> dict[str, Any]:
    """libpq parameters for a long-lived listening connection, used where the
    alias's OPTIONS do not set them.

    TCP keepalives at the ``KEEPALIVE_INTERVAL``, so a connection whose peer
    vanished fails in seconds even while nothing is sent; a connect timeout;
    and an ``application_name`` that ``pubsub_health`` and operators can find
    in ``pg_stat_activity``.
    """
    keepalive = max(1, round(conf.keepalive_interval()))
    return {
        "application_name": application_name,
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": keepalive,
        "keepalives_interval": keepalive,
        "keepalives_count": 3,
    }


def transaction_untouched(using: str) -> bool:
    """Whether Django's connection for ``using`` is open and usable, and nothing
    has run in its current transaction: the driver has not even sent ``BEGIN``.

    Both drivers report libpq's transaction status, where 0 is idle.
    """
    wrapper = connections[using]
    raw = wrapper.connection
    return raw is not None and not wrapper.needs_rollback and raw.info.transaction_status == 0


# The driver's connection keywords that Django builds from settings keys, not
# from OPTIONS (its USER, PASSWORD, HOST and PORT win over OPTIONS). psycopg's
# ``database`` is libpq's ``dbname``.
_SETTINGS_KEYWORDS = {
    "dbname": "NAME",
    "database": "NAME",
    "user": "USER",
    "password": "PASSWORD",
    "host": "HOST",
    "port": "PORT",
}


def _settings_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """Take the keywords of ``_SETTINGS_KEYWORDS`` out of ``options``, as settings keys.

    Raises:
        TypeError: Both ``database`` and ``dbname``.
    """
    if "database" in options and "dbname" in options:
        raise TypeError(
            "Pass database= or dbname= (two names of the database to connect to), not both."
        )
    return {
        _SETTINGS_KEYWORDS[keyword]: options.pop(keyword)
        for keyword in list(options)
        if keyword in _SETTINGS_KEYWORDS
    }


def dedicated_wrapper(
    using: str | None = None,
    *,
    options: dict[str, Any] | None = None,
    default_options: dict[str, Any] | None = None,
) -> BaseDatabaseWrapper:
    """A new, unconnected Django wrapper for ``using``, never one Django hands out.

    Args:
        using: The alias; default the ``DATABASE`` setting.
        options: libpq parameters that override the alias's OPTIONS;
            ``dbname`` (or psycopg's ``database``), ``user``, ``password``,
            ``host`` and ``port`` override its NAME, USER, PASSWORD, HOST
            and PORT.
        default_options: libpq parameters used where OPTIONS does not set them.

    Raises:
        ImproperlyConfigured: Unknown alias, or not PostgreSQL.
        TypeError: ``options`` has both ``database`` and ``dbname``.
    """
    base = database_wrapper(using)
    overrides = dict(options or {})
    settings_dict = copy.deepcopy(base.settings_dict)
    settings_dict.update(_settings_overrides(overrides))
    settings_options = settings_dict.get("OPTIONS") or {}
    settings_options.pop("pool", None)  # a listener holds its connection for good
    settings_dict["OPTIONS"] = {
        **(default_options or {}),
        **settings_options,
        **overrides,
    }
    return type(base)(settings_dict, base.alias)


def open_connection(
    using: str | None = None,
    *,
    options: dict[str, Any] | None = None,
    default_options: dict[str, Any] | None = None,
) -> DriverConnection:
    """Open a new dedicated autocommit connection for a ``DATABASES`` alias.

    Django's own backend builds it, so HOST, PORT, NAME, USER, PASSWORD and
    OPTIONS (``sslmode``, ``service``, ``passfile``...) mean what they mean for
    Django. It is never one of the connections Django hands to requests, and
    never taken from a connection pool.

    Args:
        using: The alias; default the ``DATABASE`` setting.
        options: libpq parameters that override the alias's OPTIONS.
        default_options: libpq parameters used where OPTIONS does not set them.

    Returns:
        The connection.

    Raises:
        ImproperlyConfigured: Unknown alias, or not PostgreSQL.
        TypeError: ``options`` has both ``database`` and ``dbname``.
        ConnectionLost: PostgreSQL could not be reached.
    """
    wrapper = dedicated_wrapper(using, options=options, default_options=default_options)
    try:
        wrapper.connect()
    except lost_errors() as exc:
        raise ConnectionLost(f"Cannot connect to database {wrapper.alias!r}: {exc}") from exc
    driver_class = Psycopg3Connection if is_psycopg3 else Psycopg2Connection
    return driver_class(wrapper.connection, wrapper.alias)


def fetch_rows(using: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one of the outbox's bookkeeping statements on Django's connection
    for ``using``; return its rows.

    The driver's own cursor, with Django's translation of errors: Django's
    cursor wrapper would only add query logging and ``execute_wrapper`` hooks
    to the package's own statements, at about a tenth of their time.
    """
    connection = connections[using]
    connection.ensure_connection()
    with connection.wrap_database_errors:
        return fetch(connection.connection, statement, params)


# SQLSTATE 42P01, undefined_table.
UNDEFINED_TABLE = "42P01"


def outbox_missing(exc: ProgrammingError, using: str | None) -> OutboxMissing | None:
    """The :class:`OutboxMissing` to raise from ``exc`` when it is PostgreSQL's
    undefined_table error for the outbox table (migrations not run); None for
    any other error.

    Args:
        exc: Django's error, whose ``__cause__`` is the driver's.
        using: The alias the statement ran on; default the ``DATABASE`` setting.
    """
    cause = exc.__cause__
    # psycopg 3 names it sqlstate, psycopg2 pgcode; both have diag.
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if code != UNDEFINED_TABLE:
        return None
    diag = getattr(cause, "diag", None)
    if f'"{OUTBOX_TABLE}"' not in (getattr(diag, "message_primary", None) or ""):
        return None
    alias = using or conf.database()
    command = "python manage.py migrate django_pgpubsub"
    if alias != DEFAULT_DB_ALIAS:
        command += f" --database {alias}"
    message = (
        f"The outbox table {OUTBOX_TABLE} is not in database {alias!r}: its "
        f"migrations have not run. Run `{command}`."
    )
    if connections[alias].in_atomic_block:
        message += (
            " The failed statement aborted the current transaction: it can only be rolled back."
        )
    return OutboxMissing(message)
