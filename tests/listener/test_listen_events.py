"""`manage.py listen_events` in a real subprocess against a real PostgreSQL."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

import pytest
from django.db import connection

from django_pgpubsub import conf, notify, notify_many
from django_pgpubsub.management.commands.listen_events import Command
from django_pgpubsub.vocabulary.handlers import registry
from tests.helpers import ManagePy, wait_until
from tests.testapp.models import Received

# Each test starts a process.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

Start = Callable[..., ManagePy]


def received(*handlers: str) -> list[tuple[str, str, str]]:
    rows = Received.objects.order_by("id")
    if handlers:
        rows = rows.filter(handler__in=handlers)
    return list(rows.values_list("channel", "payload", "handler"))


def wait_for_rows(count: int, timeout: float = 20.0) -> None:
    wait_until(lambda: Received.objects.count() >= count, timeout, f"{count} handler calls")


def listener_backends() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'django_pgpubsub listener' AND datname = current_database()"
        )
        return [row[0] for row in cursor.fetchall()]


def test_events_on_two_channels_reach_the_right_handlers_in_order(listen_events: Start) -> None:
    process = listen_events()
    # Every channel of tests/testapp/pubsub.py, as this process registered them too.
    channels = registry.channels()
    handlers = sum(len(registry.handlers(channel)) for channel in channels)
    assert "test.a" in channels
    assert f"Listening on {len(channels)} channel(s) with {handlers} handler(s)" in process.output()
    notify("test.a", "1")
    notify("test.b", "2")
    notify("test.a", "3")
    wait_for_rows(4)
    assert received() == [
        ("test.a", "1", "recorder"),
        ("test.b", "2", "recorder"),
        ("test.b", "2", "second_for_b"),
        ("test.a", "3", "recorder"),
    ]


def test_the_listener_uses_its_own_application_name(listen_events: Start) -> None:
    listen_events("--channel", "test.a")
    assert len(listener_backends()) == 1


def test_reconnects_after_its_backend_is_terminated(listen_events: Start) -> None:
    process = listen_events()
    [old_pid] = listener_backends()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [old_pid])
    # Listening again within 2 s: a new backend, LISTENing, handling events.
    wait_until(lambda: listener_backends() not in ([], [old_pid]), 2.0, "a new backend")
    wait_until(lambda: "again after" in process.output(), 2.0, "the reconnect log")
    notify("test.a", "after")
    wait_for_rows(1)
    assert received() == [("test.a", "after", "recorder")]
    assert f"Lost the connection to '{conf.listener_database()}'" in process.output()
    assert process.process.poll() is None


def test_sigterm_lets_the_running_handler_finish_and_exits_0(listen_events: Start) -> None:
    process = listen_events()
    notify("test.slow", {"sleep": 1.0})
    wait_until(lambda: received("slow started") != [], what="the handler to start")
    process.signal(signal.SIGTERM)
    assert process.wait() == 0
    assert [h for _, _, h in received()] == ["slow started", "slow finished"]


def test_a_second_signal_exits_at_once(listen_events: Start) -> None:
    process = listen_events()
    notify("test.slow", {"sleep": 60})
    wait_until(lambda: received("slow started") != [], what="the handler to start")
    process.signal(signal.SIGINT)
    process.wait_for_output("SIGINT: stopping after the running handler")
    process.signal(signal.SIGINT)
    assert process.wait(timeout=10) == 128 + signal.SIGINT
    assert received("slow finished") == []


def test_non_json_and_empty_payloads_arrive_as_strings(listen_events: Start) -> None:
    listen_events()
    with connection.cursor() as cursor:
        cursor.execute("""NOTIFY "test.a", 'not json'""")
        cursor.execute('NOTIFY "test.a"')
    notify("test.a", {"next": 1})
    wait_for_rows(3)
    assert [p for _, p, _ in received()] == ["not json", "", '{"next":1}']


def test_a_failing_handler_stops_neither_the_next_event_nor_the_other_handler(
    listen_events: Start,
) -> None:
    process = listen_events()
    notify("test.fail", "boom")
    notify("test.fail", "fine")
    wait_for_rows(3)
    assert received() == [
        ("test.fail", "boom", "after_the_failing_one"),
        ("test.fail", "fine", "fails_on_boom"),
        ("test.fail", "fine", "after_the_failing_one"),
    ]
    wait_until(lambda: "RuntimeError: boom" in process.output(), what="the traceback")
    assert (
        "Handler tests.testapp.pubsub.fails_on_boom failed on channel 'test.fail'"
        in process.output()
    )


def test_a_burst_of_ten_thousand_is_handled_completely(listen_events: Start) -> None:
    listen_events("--channel", "test.burst")
    notify_many(("test.burst", str(i)) for i in range(10_000))
    wait_for_rows(10_000, timeout=120)
    payloads = list(Received.objects.order_by("id").values_list("payload", flat=True))
    assert payloads == [str(i) for i in range(10_000)]


def test_a_handler_that_notifies_gets_its_event_delivered(listen_events: Start) -> None:
    listen_events()
    notify("test.echo", "ping")
    wait_for_rows(1)
    assert received() == [("test.a", "echo:ping", "recorder")]


def test_max_events_exits_0_after_n(listen_events: Start) -> None:
    process = listen_events("--max-events", "2", "--channel", "test.a")
    notify_many([("test.a", "1"), ("test.a", "2"), ("test.a", "3")])
    assert process.wait() == 0
    assert [p for _, p, _ in received()] == ["1", "2"]


def test_list_prints_channels_and_handlers(listen_events: Start) -> None:
    process = listen_events("--list", ready="")
    assert process.wait() == 0
    lines = "".join(process.stdout).splitlines()
    assert "test.b: tests.testapp.pubsub.recorder, tests.testapp.pubsub.second_for_b" in lines
    assert "test.echo: tests.testapp.pubsub.echo" in lines
    assert len(lines) == len(registry.channels())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--channel", "nobody.handles.this"], "No handler for channel(s) ['nobody.handles.this']"),
        (["--channel", "x" * 64], "64 bytes"),
        (["--max-events", "0"], "must be at least 1"),
        (["--database", "typo"], "No database 'typo' in settings.DATABASES; configured aliases"),
        (["--database", "lite"], "DATABASES['lite'] uses sqlite"),
        (["--metrics-port", "70000"], "must be a port from 0 to 65535"),
        (["--metrics-port", "0", "--metrics-address", "no.such.host"], "Cannot serve metrics"),
    ],
)
def test_bad_requests_exit_non_zero_with_a_message(
    listen_events: Start, args: list[str], message: str
) -> None:
    process = listen_events(*args, ready="")
    assert process.wait() != 0
    assert message in process.output()
    assert "Traceback" not in process.output()
    if "No handler" in message:
        assert "@handler('orders')" in process.output()


def test_verbosity_2_prints_a_line_per_handled_event(listen_events: Start) -> None:
    process = listen_events("-v", "2", "--channel", "test.fail", "--channel", "test.durable")
    notify("test.fail", "boom")
    notify("test.fail", "fine")
    notify("test.durable", "kept", durable=True)
    handlers = "tests.testapp.pubsub.fails_on_boom, tests.testapp.pubsub.after_the_failing_one"
    process.wait_for_output(": failed in tests.testapp.pubsub.fails_on_boom (RuntimeError)")
    process.wait_for_output("handled test.durable in ")
    lines = [line for line in "".join(process.stdout).splitlines() if line.startswith("handled")]
    assert len(lines) == 3, lines
    # Plain events in their order; the durable one whenever it was claimed.
    durable = [line for line in lines if "test.durable" in line]
    plain = [line for line in lines if "test.fail" in line]
    assert re.fullmatch(
        rf"handled test\.fail in \d+\.\d ms by {handlers}: "
        r"failed in tests\.testapp\.pubsub\.fails_on_boom \(RuntimeError\)",
        plain[0],
    )
    assert re.fullmatch(rf"handled test\.fail in \d+\.\d ms by {handlers}: ok", plain[1])
    assert re.fullmatch(
        r"handled test\.durable in \d+\.\d ms by tests\.testapp\.pubsub\.durable_recorder: ok",
        durable[0],
    )


def test_at_the_default_verbosity_nothing_is_done_per_event(listen_events: Start) -> None:
    process = listen_events("--channel", "test.a", "--max-events", "1")
    notify("test.a", "quiet")
    assert process.wait() == 0
    assert "handled" not in process.output()
    # No observer at all: the listener skips its per-event timing.
    assert Command()._observer(None, 1) is None
    assert Command()._observer(None, 2) is not None
