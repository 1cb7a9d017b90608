"""Log lines about an event carry its channel (and id and attempt if durable)
as ``extra`` fields, for structured logging."""

from __future__ import annotations

import logging
import sys

import pytest

from django_pgpubsub import Event, Registry, notify
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.management.commands.listen_events import show_logs

pytestmark = pytest.mark.django_db(transaction=True)


def fail(event: Event) -> None:
    raise RuntimeError("boom")


def run_failing_handler(payload: str) -> None:
    """Run a plain listener whose one handler raises on one event."""
    handlers = Registry()
    handlers.register(fail, "logged")
    listener = Listener(
        ["logged"],
        registry=handlers,
        durable=False,
        max_events=1,
        on_connect=lambda _listener, _again: notify("logged", payload),
    )
    assert listener.run() == 1


def test_a_failed_handler_logs_channel_and_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "django_pgpubsub")
    run_failing_handler("payload")
    about_event = [r for r in caplog.records if hasattr(r, "channel")]
    assert [r.getMessage().split(";")[0] for r in about_event] == [
        "Handler tests.listener.test_log_fields.fail failed on channel 'logged'",
        "The payload was: payload",
    ]
    for record in about_event:
        assert record.__dict__["channel"] == "logged"
        assert record.__dict__["handler"] == "tests.listener.test_log_fields.fail"
        assert not hasattr(record, "event_id")


def test_a_failed_durable_event_logs_its_id_and_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "django_pgpubsub")
    notify("logged.durable", "payload", durable=True)
    handlers = Registry()
    handlers.register(fail, "logged.durable")
    assert Listener(["logged.durable"], registry=handlers, max_events=1).run() == 1
    [record] = [r for r in caplog.records if hasattr(r, "event_id")]
    assert record.__dict__["channel"] == "logged.durable"
    assert record.__dict__["attempt"] == 1
    event_id = record.__dict__["event_id"]
    assert isinstance(event_id, int)
    assert f"durable event {event_id} " in record.getMessage()


def test_the_payload_of_a_failed_event_is_logged_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "django_pgpubsub")
    run_failing_handler("secret-payload")
    assert any("failed on channel 'logged'" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if "secret-payload" in r.getMessage()]


@pytest.mark.parametrize(
    ("verbosity", "level"),
    [(0, logging.WARNING), (1, logging.INFO), (2, logging.DEBUG), (3, logging.DEBUG)],
)
def test_listen_events_verbosity_sets_the_library_log_level(
    monkeypatch: pytest.MonkeyPatch, verbosity: int, level: int
) -> None:
    package = logging.getLogger("django_pgpubsub")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # no LOGGING configured
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(package, "level", package.level)
    show_logs(verbosity)
    assert package.level == level
    [stream] = package.handlers
    assert isinstance(stream, logging.StreamHandler)
    assert stream.stream is sys.stderr


def test_listen_events_leaves_logging_alone_when_logging_handles_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    package = logging.getLogger("django_pgpubsub")
    configured = logging.NullHandler()
    monkeypatch.setattr(logging.getLogger(), "handlers", [configured])
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(package, "level", logging.ERROR)
    show_logs(3)
    assert (package.handlers, package.level) == ([], logging.ERROR)
