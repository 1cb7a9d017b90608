"""Before ``migrate``: durable sends and ``durable_events`` say to run it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import ProgrammingError, connection, transaction
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_pgpubsub import OutboxMissing, PubSubError, anotify, notify, notify_many
from django_pgpubsub.db.connection import outbox_missing
from django_pgpubsub.models import OutboxEvent

MIGRATE = "Run `python manage.py migrate django_pgpubsub`."
ABORTED = "The failed statement aborted the current transaction: it can only be rolled back."


@contextmanager
def outbox_away() -> Iterator[None]:
    """The outbox table renamed, as if its migrations never ran; inside the
    block's own savepoint, which the error (or the block's end) rolls back."""
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '5s'")
                cursor.execute("ALTER TABLE django_pgpubsub_outbox RENAME TO outbox_away")
            yield
            raise _RollBack
    except _RollBack:
        pass


class _RollBack(Exception):
    pass


SENDS: dict[str, Callable[[], Any]] = {
    "notify": lambda: notify("jobs", "x", durable=True),
    "notify with a key": lambda: notify("jobs", "x", durable=True, key="k"),
    "notify with an ordering key": lambda: notify("jobs", "x", durable=True, ordering_key="o"),
    "notify_many": lambda: notify_many([("jobs", "a"), ("jobs", "b")], durable=True),
    "notify_many with ordering keys": lambda: notify_many([("jobs", "a", None, "o")], durable=True),
    "anotify": lambda: async_to_sync(anotify)("jobs", "x", durable=True),
}


ASYNC_NEEDS_PSYCOPG3 = pytest.mark.skipif(not is_psycopg3, reason="anotify() needs psycopg 3")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "send",
    [pytest.param(name, marks=[ASYNC_NEEDS_PSYCOPG3] * (name == "anotify")) for name in SENDS],
)
def test_a_durable_send_before_migrate_says_to_run_it(send: str) -> None:
    with outbox_away(), pytest.raises(OutboxMissing) as raised:
        SENDS[send]()
    error = raised.value
    assert str(error) == (
        "The outbox table django_pgpubsub_outbox is not in database 'default': its "
        f"migrations have not run. {MIGRATE} {ABORTED}"
    )
    # What a Django developer catches: the database's error, and ours.
    assert isinstance(error, ProgrammingError)
    assert isinstance(error, PubSubError)
    assert "django_pgpubsub_outbox" in str(error.__cause__)
    # The savepoint is gone with the error, and the table is back.
    assert notify("jobs", "x", durable=True) is True
    assert OutboxEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_in_autocommit_there_is_no_transaction_to_roll_back() -> None:
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE django_pgpubsub_outbox RENAME TO outbox_away")
    try:
        with pytest.raises(OutboxMissing) as raised:
            notify("jobs", "x", durable=True)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE outbox_away RENAME TO django_pgpubsub_outbox")
    assert str(raised.value).endswith(f"its migrations have not run. {MIGRATE}")


def error_of(sql: str) -> ProgrammingError:
    """Django's error for ``sql``, in a savepoint rolled back with it."""
    with pytest.raises(ProgrammingError) as raised, transaction.atomic():
        connection.cursor().execute(sql)
    return raised.value


@pytest.mark.django_db
def test_only_the_missing_outbox_is_translated() -> None:
    with outbox_away():
        assert isinstance(
            outbox_missing(error_of("SELECT * FROM django_pgpubsub_outbox"), None),
            OutboxMissing,
        )
        # Another missing table, even in a statement that names the outbox.
        assert outbox_missing(error_of("SELECT * FROM no_such_table"), None) is None
        sql = "SELECT 1 FROM no_such_table WHERE 'django_pgpubsub_outbox' = ''"
        assert outbox_missing(error_of(sql), None) is None
        # A missing column of the outbox, where it is (before a migration).
        assert outbox_missing(error_of("SELECT no_such_column FROM outbox_away"), None) is None
        # Plain events never touch the outbox.
        notify("jobs", "plain")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [
        (),
        ("status",),
        ("retry",),
        ("release", "--id", "1"),
        ("purge", "--older-than", "7d"),
    ],
)
def test_durable_events_before_migrate_is_one_line_saying_to_run_it(args: tuple[str, ...]) -> None:
    out = StringIO()
    with outbox_away(), pytest.raises(CommandError) as raised:
        call_command("durable_events", *args, stdout=out)
    message = str(raised.value)
    assert message.startswith(
        "The outbox table django_pgpubsub_outbox is not in database 'default': its "
        f"migrations have not run. {MIGRATE}"
    )
    assert "\n" not in message
    assert out.getvalue() == ""
