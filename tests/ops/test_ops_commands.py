"""pubsub_health and durable_events: channels that no listener handles, bad
flags as one clear line, and the outbox read through its indexes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_pgpubsub import Registry, notify, registry
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.ops.health import FAILED_SQL, PENDING_CHANNELS_SQL, check_health
from tests.helpers import ListenerThread, ManagePy
from tests.ops.test_metrics import big_outbox, explain, outbox_scans

__all__ = ["big_outbox"]  # a fixture, used by name

pytestmark = pytest.mark.django_db(transaction=True)

UNHANDLED_LINE = (
    "No handler is registered for channel(s) {}: their pending events wait until one is. "
    "Register one (@handler in <app>/pubsub.py of an installed app), then start "
    "`manage.py listen_events`."
)
NOT_LISTENED_LINE = (
    "No running listen_events handles channel(s) {}: their pending events wait until one "
    "does. Their handlers are registered: start `manage.py listen_events` (it listens on "
    "every registered channel), or add --channel for them to the one running."
)


def run(command: str, *args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command(command, *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def listening_on_handled() -> Iterator[None]:
    """A listener of channel "handled" (plain only: it leaves the events pending)."""
    handlers = Registry()
    handlers.register(print, "handled")
    with ListenerThread(Listener(registry=handlers, durable=False)).wait_connected():
        yield


def test_channels_with_pending_events_and_no_listener_are_named(
    listening_on_handled: None,
) -> None:
    notify("handled", "x", durable=True)
    notify("orphan.b", "x", durable=True)
    notify("orphan.a", "x", durable=True)
    notify("dead", "x", durable=True)
    OutboxEvent.objects.filter(channel="dead").update(state=OutboxEvent.State.FAILED)

    report = check_health(max_failed=1)
    assert report.healthy  # a warning, unless listeners are required
    assert report.checks["unhandled_channels"].value == ["orphan.a", "orphan.b"]
    status, out = run("pubsub_health", "--max-failed", "1")
    assert status == 0
    assert out.splitlines() == [
        "warning: unhandled_channels: pending durable events on channel(s) "
        "['orphan.a', 'orphan.b'] that no running listen_events handles: they wait until one does",
        # A warning is not listed as healthy.
        "healthy: database, queue_usage, failed_events, oldest_pending, blocked_keys; "
        "warning: unhandled_channels",
    ]
    status, out = run("pubsub_health", "--max-failed", "1", "--json")
    assert status == 0
    checks = json.loads(out)["checks"]
    assert [name for name, check in checks.items() if check["warning"]] == ["unhandled_channels"]
    assert checks["unhandled_channels"]["ok"] is True
    status, out = run("pubsub_health", "--max-failed", "1", "--require-listener")
    assert status == 1
    assert out.startswith("unhandled_channels: pending durable events on channel(s) ['orphan.a'")

    out = run("durable_events", "status")[1]
    assert out.splitlines()[-1] == UNHANDLED_LINE.format("['orphan.a', 'orphan.b']")


def test_without_any_listener_every_pending_channel_is_unhandled() -> None:
    notify("handled", "x", durable=True)
    assert run("durable_events", "status")[1].splitlines()[-1] == UNHANDLED_LINE.format(
        "['handled']"
    )
    OutboxEvent.objects.update(state=OutboxEvent.State.FAILED)  # nothing pending: no line
    assert "No handler is registered" not in run("durable_events", "status")[1]


def test_a_channel_with_a_handler_and_no_listener_is_told_to_start_one() -> None:
    # tests/testapp/pubsub.py registers handlers of test.durable (and test.a),
    # which this process autodiscovered, as manage.py does.
    assert registry.handlers("test.durable")
    notify("test.durable", "x", durable=True)
    notify("test.a", "x", durable=True)
    notify("orphan", "x", durable=True)
    lines = run("durable_events", "status")[1].splitlines()
    assert lines[-2:] == [
        NOT_LISTENED_LINE.format("['test.a', 'test.durable']"),
        UNHANDLED_LINE.format("['orphan']"),
    ]
    OutboxEvent.objects.filter(channel="orphan").delete()
    lines = run("durable_events", "status")[1].splitlines()
    assert lines[-1] == NOT_LISTENED_LINE.format("['test.a', 'test.durable']")
    assert not [line for line in lines if line.startswith("No handler is registered")]


def test_the_health_queries_read_the_outbox_through_its_partial_indexes(
    big_outbox: None,
) -> None:
    for sql in (PENDING_CHANNELS_SQL, FAILED_SQL):
        scans = outbox_scans(explain(sql))
        assert scans, sql
        assert scans <= {"pgpubsub_outbox_pending", "pgpubsub_outbox_failed"}, (sql, scans)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database", "nope"], r"No database 'nope' in settings.DATABASES; configured aliases"),
        (["--database", "lite"], r"DATABASES\['lite'\] uses sqlite"),
        (["--timeout", "0"], r"--timeout: must be more than 0 seconds, not 0"),
        (["--timeout", "soon"], r"--timeout: 'soon' is not a number"),
        (["--timeout", "inf"], r"--timeout: must be at least 0, not inf"),
        (["--max-queue-usage", "2"], r"--max-queue-usage: must be from 0 to 1, not 2"),
        (["--max-failed", "-1"], r"--max-failed: must be at least 0, not -1"),
        (["--max-failed", "1.5"], r"--max-failed: '1.5' is not a number"),
        (["--max-pending-age", "-5"], r"--max-pending-age: must be at least 0, not -5"),
        (["--require-listener", "--channel", ""], r"Channel name is empty"),
    ],
)
def test_pubsub_health_bad_flags(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("pubsub_health", *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database", "nope", "status"], r"No database 'nope'.*configured aliases are \["),
        (["--database", "lite"], r"DATABASES\['lite'\] uses sqlite"),
        (["retry", "--id", "x"], r"invalid int value: 'x'"),
        (["retry", "--channel", ""], r"Channel name is empty"),
        (["release"], r"Name the events to release"),
    ],
)
def test_durable_events_bad_flags(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("durable_events", *args)


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["pubsub_health", "--database", "nope"],
        ["pubsub_health", "--timeout", "-1"],
        ["durable_events", "--database", "nope"],
    ],
)
def test_bad_flags_from_the_shell_are_one_line_without_a_traceback(
    test_database_url: str, argv: list[str]
) -> None:
    process = ManagePy(*argv, url=test_database_url)
    assert process.wait() != 0
    output = process.output()
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "rror" in line]
    assert len(errors) == 1, output
