"""Durable events through crashes of real ``listen_events`` processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import transaction

from django_pgpubsub import notify_many
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ManagePy, wait_until
from tests.testapp.models import Received

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

Start = Callable[..., ManagePy]
MAX_ATTEMPTS = 3  # tests/settings.py


def test_a_handler_that_kills_its_process_ends_failed_and_the_rest_is_handled(
    listen_events: Start,
) -> None:
    with transaction.atomic():  # one batch: the crash sits between two events
        notify_many([("test.durable.crash", p) for p in ("before", "crash", "after")], durable=True)
    crash = OutboxEvent.objects.filter(payload="crash")

    def done() -> bool:
        failed = bool(crash.filter(state="failed").exists())
        return failed and Received.objects.filter(payload="after").exists()

    crashes = 0
    for _ in range(2 * MAX_ATTEMPTS):
        listener = listen_events("--channel", "test.durable.crash", ready="")
        wait_until(lambda: listener.process.poll() is not None or done(), 30, "a crash, or the end")  # noqa: B023
        if listener.process.poll() is None:
            break
        assert listener.wait() == 3, listener.output()
        crashes += 1
    # At most one more: the crash of the group of three is charged to none of them.
    assert 1 <= crashes <= MAX_ATTEMPTS + 1
    failed = crash.get()
    assert (failed.state, failed.attempts) == ("failed", MAX_ATTEMPTS)
    assert f"Attempt {MAX_ATTEMPTS} did not finish" in failed.last_error
    assert sorted(Received.objects.values_list("payload", flat=True)) == ["after", "before"]
    assert OutboxEvent.objects.count() == 1  # no other event of the batch failed


def test_an_event_whose_listener_is_killed_mid_handler_is_handled_by_another_within_10_s(
    listen_events: Start, tmp_path: Path
) -> None:
    marker = tmp_path / "first-attempt"
    listeners = [listen_events("--channel", "test.durable.hang") for _ in range(2)]
    notify_many([("test.durable.hang", {"marker": str(marker)})], durable=True)
    wait_until(lambda: marker.exists() and marker.read_text() != "", 30, "the first attempt")
    hung = int(marker.read_text())
    [other] = [p for p in listeners if p.process.pid != hung]
    os.kill(hung, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(Received.objects.exists, 10, "the other listener to handle the event")
    assert time.monotonic() - killed_at < 10
    [row] = Received.objects.all()
    assert (row.handler, row.pid) == ("durable after hang", other.process.pid)
    wait_until(lambda: not OutboxEvent.objects.exists(), 10, "an empty outbox")
    assert OutboxEvent.objects.count() == 0
