"""What docs/operations.rst's Upgrading section says of each migration's locks."""

from __future__ import annotations

import importlib
import re
from io import StringIO

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)


def sql_of(migration: str) -> list[str]:
    out = StringIO()
    call_command("sqlmigrate", "django_pgpubsub", migration, stdout=out)
    return [line for line in out.getvalue().splitlines() if line and not line.startswith("--")]


def test_0002_adds_nullable_columns_and_builds_its_indexes_without_concurrently() -> None:
    statements = sql_of("0002")
    added = [line for line in statements if "ADD COLUMN" in line]
    assert len(added) == 7
    assert all(" NULL" in line and "NOT NULL" not in line for line in added)
    builds = [line for line in statements if "INDEX" in line]
    assert [bool(re.match(r"CREATE (UNIQUE )?INDEX ", line)) for line in builds] == [True, True]
    assert not [line for line in statements if "CONCURRENTLY" in line]


def test_0003_drops_and_rebuilds_the_pending_index_in_one_transaction() -> None:
    statements = sql_of("0003")
    assert statements[0] == "BEGIN;"
    assert statements[-1] == "COMMIT;"
    assert statements[1].startswith('DROP INDEX IF EXISTS "pgpubsub_outbox_pending"')
    assert statements[2].startswith('CREATE INDEX "pgpubsub_outbox_pending"')


def test_0004_creates_a_function_and_no_lock_on_the_outbox() -> None:
    module = importlib.import_module("django_pgpubsub.migrations.0004_complete_function")
    assert [type(operation).__name__ for operation in module.Migration.operations] == ["RunPython"]
    assert module.CREATE.strip().startswith("CREATE FUNCTION django_pgpubsub_complete(")
    assert "ALTER TABLE" not in module.CREATE
    assert "INDEX" not in module.CREATE


def test_0005_creates_a_table_and_no_lock_on_the_outbox() -> None:
    statements = [line for line in sql_of("0005") if line not in ("BEGIN;", "COMMIT;")]
    assert statements
    assert all("django_pgpubsub_outbox" not in line for line in statements), statements


def test_0006_builds_its_index_concurrently_outside_a_transaction() -> None:
    statements = sql_of("0006")
    assert "BEGIN;" not in statements
    assert [line for line in statements if "INDEX" in line] == [
        'CREATE INDEX CONCURRENTLY "pgpubsub_outbox_failed" ON "django_pgpubsub_outbox" '
        '("channel") WHERE "state" = \'failed\';'
    ]
    module = importlib.import_module("django_pgpubsub.migrations.0006_failed_index")
    assert module.Migration.atomic is False


def test_0007_adds_a_nullable_column_and_a_function_in_one_transaction() -> None:
    statements = sql_of("0007")
    assert statements == [
        "BEGIN;",
        'ALTER TABLE "django_pgpubsub_outbox" ADD COLUMN "holder_key" bigint NULL;',
        "COMMIT;",
    ]
    module = importlib.import_module("django_pgpubsub.migrations.0007_holder_key")
    assert module.Migration.atomic is True
    assert module.CREATE.strip().startswith("CREATE FUNCTION django_pgpubsub_complete_next(")
    assert "DROP FUNCTION django_pgpubsub_complete(" not in module.CREATE


def test_0008_adds_a_nullable_column_and_builds_its_indexes_concurrently() -> None:
    statements = sql_of("0008")
    assert "BEGIN;" not in statements
    assert statements[0] == (
        'ALTER TABLE "django_pgpubsub_outbox" ADD COLUMN "ordering_key" text NULL;'
    )
    builds = [line for line in statements if "INDEX" in line]
    assert [line.split('"')[1] for line in builds] == [
        "pgpubsub_outbox_key_running",
        "pgpubsub_outbox_key_retrying",
        "pgpubsub_outbox_ordering",
    ]
    assert all(line.startswith("CREATE INDEX CONCURRENTLY") for line in builds)


def test_0009_adds_a_nullable_column_in_one_transaction() -> None:
    assert sql_of("0009") == [
        "BEGIN;",
        'ALTER TABLE "django_pgpubsub_outbox" ADD COLUMN "alone" boolean NULL;',
        "COMMIT;",
    ]
