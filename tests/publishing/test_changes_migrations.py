"""publish_changes triggers live in migrations: makemigrations sees them, migrate installs
and removes them (checked in pg_trigger)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from django_pgpubsub import publish_changes, unpublish_changes
from tests.helpers import ManagePy
from tests.testapp.models import Received, Tracked

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def planned() -> list[str]:
    """The trigger operations ``makemigrations testapp`` would write (it writes nothing).

    Other operations are left out: test modules declare models of their own.
    """
    out = StringIO()
    call_command("makemigrations", "testapp", "--dry-run", stdout=out, verbosity=1)
    return [line.strip(" -+~?") for line in out.getvalue().splitlines() if "trigger" in line]


def installed(table: str) -> set[str]:
    """Names of the publish_changes triggers on ``table`` ("schema"."table" allowed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass"
            " AND tgname LIKE 'pgtrigger_pgpubsub_%%'",
            [table],
        )
        return {name.rsplit("_", 1)[0] for (name,) in cursor.fetchall()}


ALL = {f"pgtrigger_pgpubsub_{event}" for event in ("created", "updated", "deleted")}


@pytest.mark.slow
def test_makemigrations_is_clean_after_migrate(test_database_url: str) -> None:
    # In a process of its own: this one holds models that test modules declare.
    check = ManagePy("makemigrations", "--check", "--dry-run", url=test_database_url)
    assert check.wait() == 0, check.output()
    assert "No changes detected" in check.output()


def test_triggers_are_installed_by_migrate() -> None:
    assert installed("testapp_item") == ALL
    assert installed('"testapp_schema"."gadget"') == ALL
    assert installed("auth_permission") == {"pgtrigger_pgpubsub_created"}


def test_adding_changing_and_removing_a_publication_makes_a_migration() -> None:
    assert planned() == []
    publish_changes(Received, events=("deleted",))
    try:
        assert planned() == ["Create trigger pgpubsub_deleted on model received"]
    finally:
        unpublish_changes(Received)
    unpublish_changes(Tracked)
    try:
        assert planned() == ["Remove trigger pgpubsub_updated from model tracked"]
        publish_changes(Tracked, channel="tracked", events=("updated",), changed=("note",))
        assert planned() == [
            "Remove trigger pgpubsub_updated from model tracked",
            "Create trigger pgpubsub_updated on model tracked",
        ]
    finally:
        unpublish_changes(Tracked)
        publish_changes(Tracked, channel="tracked", events=("updated",), changed=("status",))
    assert planned() == []


def test_migrating_backwards_drops_the_triggers() -> None:
    try:
        call_command("migrate", "testapp", "0003", verbosity=0)
        assert installed("testapp_item") == set()
        assert installed('"testapp_schema"."gadget"') == set()
        assert installed("auth_permission") == set()  # the proxy's migration removed it
    finally:
        call_command("migrate", "testapp", verbosity=0)
    assert installed("testapp_item") == ALL
    assert installed("auth_permission") == {"pgtrigger_pgpubsub_created"}
