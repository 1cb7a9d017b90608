"""Database roles and aliases for listeners under other roles, as in production:
LOGIN, not superuser, without ``pg_read_all_stats``."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connections

ROLE_PASSWORD = "worker"


def create_role(role: str) -> None:
    """Create ``role`` (LOGIN, no superuser, no ``pg_read_all_stats``) if it does
    not exist, and grant it what a listener needs on the outbox of the test
    database: the table, its sequence; functions are executable by all."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if not cursor.fetchone():
            cursor.execute(
                f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                f"PASSWORD '{ROLE_PASSWORD}'"
            )
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON django_pgpubsub_outbox TO {role}")
        cursor.execute(f"GRANT USAGE ON SEQUENCE django_pgpubsub_outbox_id_seq TO {role}")


@contextlib.contextmanager
def database_alias(alias: str, **changes: Any) -> Iterator[str]:
    """A ``DATABASES`` alias for the test database, with ``changes`` (``USER``,
    ``HOST``, ``PORT``...), for the life of the block.

    Register it before the tests that use it set up (e.g. in a module-scoped
    fixture), and name it in their ``django_db(databases=...)``.
    """
    entry = {**copy.deepcopy(connections["default"].settings_dict), **changes}
    entry["ATOMIC_REQUESTS"] = False
    entry["CONN_MAX_AGE"] = 0
    # A mirror: a test that names the alias in its databases neither creates
    # nor flushes it (the role may not).
    entry["TEST"] = {**entry["TEST"], "MIRROR": "default"}
    settings.DATABASES[alias] = entry
    connections.settings[alias] = entry
    try:
        yield alias
    finally:
        with contextlib.suppress(Exception):
            connections[alias].close()
        with contextlib.suppress(AttributeError):
            del connections[alias]
        connections.settings.pop(alias, None)
        settings.DATABASES.pop(alias, None)
