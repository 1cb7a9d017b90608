"""Keeps what only PostgreSQL can hold off the suite's SQLite database ("lite")."""

from __future__ import annotations

from typing import Any

from django.db import connections


class PostgresOnly:
    """Gadget's table is in another schema, which SQLite has no notion of."""

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if hints.get("postgresql_only") or (app_label, model_name) == ("testapp", "gadget"):
            return connections[db].vendor == "postgresql"
        return None
