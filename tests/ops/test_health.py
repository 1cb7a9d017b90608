"""pubsub_health and the checks behind it, against the real database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

from django_pgpubsub import Registry, connect, notify
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.ops.health import check_health
from tests.helpers import ListenerThread, ManagePy, health, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listening() -> Iterator[Listener]:
    """A Listener of channels "a" and "b", running in a thread."""
    handlers = Registry()
    handlers.register(print, "a", "b")
    with ListenerThread(Listener(registry=handlers, durable=False)).wait_connected() as running:
        yield running.listener


def test_healthy_exits_0_and_names_the_checks() -> None:
    assert health() == (
        0,
        "healthy: database, queue_usage, failed_events, oldest_pending, blocked_keys, "
        "unhandled_channels\n",
    )

    def closed() -> bool:  # the connection of its own that it opened
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                ("django_pgpubsub health",),
            )
            return bool(cursor.fetchone() == (0,))

    wait_until(closed, 10, "the health check's connection to close")


def test_json_report() -> None:
    status, out = health("--json", "--require-listener")
    report = json.loads(out)
    assert status == 1
    assert report["healthy"] is False
    assert list(report["checks"]) == [
        "database",
        "queue_usage",
        "failed_events",
        "oldest_pending",
        "blocked_keys",
        "unhandled_channels",
        "listener",
    ]
    assert report["checks"]["database"]["ok"] is True
    assert report["checks"]["queue_usage"]["value"] == 0.0
    assert report["checks"]["failed_events"] == {
        "ok": True,
        "warning": False,
        "value": 0,
        "detail": "0 failed durable event(s) (limit 0)",
    }
    assert report["checks"]["oldest_pending"]["value"] is None
    assert report["checks"]["listener"]["ok"] is False
    assert report["checks"]["listener"]["value"] == 0


def test_require_listener_without_one_fails() -> None:
    status, out = health("--require-listener")
    assert status == 1
    assert out == "listener: no listen_events process is connected to 'default''s database\n"


def test_require_listener_with_one_running(listening: Listener) -> None:
    assert health("--require-listener") == (
        0,
        "healthy: database, queue_usage, failed_events, oldest_pending, blocked_keys, "
        "unhandled_channels, listener\n",
    )
    assert health("--require-listener", "--channel", "a", "--channel", "b")[0] == 0
    status, out = health("--require-listener", "--channel", "a", "--channel", "c")
    assert status == 1
    assert out == "listener: no listen_events process listens on channel(s) ['c']\n"
    report = check_health(require_listener=True, channels=["a", "b"])
    assert report.checks["listener"].value == {"a": 1, "b": 1}


def test_channel_needs_require_listener() -> None:
    with pytest.raises(CommandError, match="--channel needs --require-listener"):
        call_command("pubsub_health", "--channel", "a")


def test_a_failed_durable_event() -> None:
    notify("mail", "x", durable=True)
    OutboxEvent.objects.update(state=OutboxEvent.State.FAILED, attempts=5)
    status, out = health()
    assert status == 1
    assert out == (
        "failed_events: 1 failed durable event(s), 1 more than the 0 allowed; "
        "see `manage.py durable_events`\n"
    )
    assert health("--max-failed", "1")[0] == 0


def test_a_pending_event_older_than_the_limit() -> None:
    notify("mail", "x", durable=True)
    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(seconds=400))
    status, out = health()
    assert status == 1
    assert out.splitlines() == [
        "oldest_pending: the oldest pending durable event is 400 s old, 100 s over the limit "
        "of 300 s",
        "warning: unhandled_channels: pending durable events on channel(s) ['mail'] that no "
        "running listen_events handles: they wait until one does",
    ]
    assert health("--max-pending-age", "500")[0] == 0


def test_queue_usage_with_a_listener_stuck_in_a_transaction() -> None:
    """A listener inside a transaction holds the queue back (a zero limit: filling
    the queue to the default 0.5 would take gigabytes)."""
    assert health("--max-queue-usage", "0")[0] == 0
    with connect() as stuck, connect() as sender:
        stuck.listen("stuck")
        stuck.conn.autocommit = False
        with stuck.conn.cursor() as cursor:
            cursor.execute("SELECT 1")  # BEGIN, and stay in the transaction
        for i in range(3):  # more than one queue page
            sender.notify("stuck", f"{i}{'x' * 7000}")
        status, out = health("--max-queue-usage", "0")
        assert status == 1
        assert out.startswith("queue_usage: notification queue 0.00% full, above the limit of")
        report = json.loads(health("--json", "--max-queue-usage", "0")[1])
        assert report["checks"]["queue_usage"]["value"] > 0
        stuck.conn.rollback()


def test_an_unreachable_database_is_a_failed_check() -> None:
    settings_dict = connections["default"].settings_dict
    port = settings_dict["PORT"]
    connections["default"].close()
    settings_dict["PORT"] = "1"  # nothing listens there
    try:
        report = check_health()
        status, out = health()  # the command: exit 1 with the line, no traceback
    finally:
        settings_dict["PORT"] = port
    assert status == 1
    assert out.startswith("database: cannot reach 'default': ")
    assert out.count("\n") == 1
    assert not report.healthy
    assert list(report.checks) == ["database"]
    assert report.failures()[0].startswith("database: cannot reach 'default': ")


def test_unknown_alias_is_a_configuration_error() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="No database 'nope'"):
        check_health("nope")


def test_inside_a_transaction_the_callers_connection_stays_open() -> None:
    from django.db import transaction

    with transaction.atomic():
        assert check_health().healthy
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")


def test_the_checks_leave_the_callers_connection_and_transaction_alone() -> None:
    """They run on a connection of their own, in read-only transactions with
    their own timeouts: nothing of theirs leaks into the caller's session."""
    from django.db import transaction

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '1h'")
            cursor.execute("SET TRANSACTION READ ONLY")  # a write there would fail
        report = check_health(require_listener=True, channels=["ro"], timeout=3)
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone() == ("1h",)
    assert [name for name, check in report.checks.items() if not check.ok] == ["listener"]


@pytest.mark.slow
def test_command_against_real_processes(test_database_url: str, listen_events: Any) -> None:
    """Exit statuses as an orchestrator sees them, with a real listen_events."""
    probe = ManagePy("pubsub_health", "--require-listener", url=test_database_url)
    assert probe.wait() == 1
    assert "listener: no listen_events process" in probe.output()
    listener = listen_events("--channel", "testapp.order")
    probe = ManagePy(
        "pubsub_health", "--require-listener", "--channel", "testapp.order", url=test_database_url
    )
    assert probe.wait() == 0, probe.output()
    listener.kill()
    unreachable = test_database_url.rsplit("/", 1)[0].rsplit(":", 1)[0] + ":1/nowhere"
    probe = ManagePy("pubsub_health", url=unreachable)
    assert probe.wait() == 1
    assert probe.output().startswith("database: cannot reach 'default': ")
    assert "Traceback" not in probe.output()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_database_option_checks_that_database() -> None:
    with override_settings(PGPUBSUB={**settings.PGPUBSUB, "DATABASE": "other"}):
        notify("elsewhere", "x", durable=True)
    OutboxEvent.objects.using("other").update(state=OutboxEvent.State.FAILED)
    assert health()[0] == 0
    status, out = health("--database", "other")
    assert status == 1
    assert out.startswith("failed_events: 1 failed durable event(s)")


def test_a_missing_outbox_table_says_how_to_create_it() -> None:
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE django_pgpubsub_outbox RENAME TO outbox_away")
    try:
        status, out = health()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE outbox_away RENAME TO django_pgpubsub_outbox")
    assert status == 1
    assert out.splitlines() == [
        f"{name}: no django_pgpubsub_outbox table: run `manage.py migrate django_pgpubsub`"
        for name in ("failed_events", "oldest_pending", "blocked_keys")
    ]
