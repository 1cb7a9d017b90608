"""Group commit through crashes of real ``listen_events`` processes."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import transaction

from django_pgpubsub import notify_many
from django_pgpubsub.durable.group import GROUP_MAX
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ManagePy, wait_until
from tests.testapp.models import Received

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

Start = Callable[..., ManagePy]
MAX_ATTEMPTS = 3  # tests/settings.py


def run_until(listen_events: Start, channel: str, done: Callable[[], bool]) -> int:
    """Start listeners one after another, each until it crashes or ``done()``;
    return how many crashed."""
    crashes = 0
    for _ in range(3 * MAX_ATTEMPTS):
        listener = listen_events("--channel", channel, ready="")
        wait_until(lambda: listener.process.poll() is not None or done(), 60, "a crash, or the end")  # noqa: B023
        if listener.process.poll() is None:
            return crashes
        assert listener.wait() == 3, listener.output()
        crashes += 1
    raise AssertionError(f"{crashes} crashes, and still not done")


def test_a_poison_event_among_30_ends_failed_alone_and_the_30_are_handled(
    listen_events: Start,
) -> None:
    payloads = [f"n{i}" for i in range(30)]
    payloads.insert(13, "crash")  # os._exit(3) at every attempt
    with transaction.atomic():  # one claim, one group: the poison in its middle
        notify_many([("test.durable.crash", p) for p in payloads], durable=True)
    poison = OutboxEvent.objects.filter(payload="crash")

    def done() -> bool:
        return bool(poison.filter(state="failed").exists()) and Received.objects.count() == 30

    crashes = run_until(listen_events, "test.durable.crash", done)
    # The group's crash is charged to none of its events: then the poison,
    # alone, once per attempt.
    assert crashes == MAX_ATTEMPTS + 1
    failed = poison.get()
    assert (failed.state, failed.attempts, failed.alone) == ("failed", MAX_ATTEMPTS, True)
    assert f"Attempt {MAX_ATTEMPTS} did not finish" in failed.last_error
    handled = sorted(Received.objects.values_list("payload", flat=True))
    assert handled == sorted(f"n{i}" for i in range(30))  # each once
    assert OutboxEvent.objects.count() == 1  # no neighbour failed


def test_a_crash_mid_group_loses_no_committed_work_and_repeats_only_its_group(
    listen_events: Start, tmp_path: Path
) -> None:
    log = tmp_path / "calls"
    marker = tmp_path / "crashed"
    count = 120
    items = [
        (
            "test.durable.crash_once",
            json.dumps({"n": i, "log": str(log), "marker": str(marker), "crash": i == 90}),
        )
        for i in range(count)
    ]
    with transaction.atomic():
        notify_many(items, durable=True)
    ids = sorted(OutboxEvent.objects.values_list("id", flat=True))
    crash_id = ids[90]

    def done() -> bool:
        return marker.exists() and not OutboxEvent.objects.exists()

    assert run_until(listen_events, "test.durable.crash_once", done) == 1
    calls = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    crashed_pid = calls[[event_id for _, event_id in calls].index(crash_id)][0]
    # Every event is handled, its writes committed once.
    rows = Received.objects.values_list("payload", "pid")
    assert len(rows) == count
    assert len({payload for payload, _ in rows}) == count
    # What the crashed listener committed before it died stays, run once.
    committed_by_crashed = sum(1 for _, pid in rows if pid == crashed_pid)
    assert committed_by_crashed > 0
    times = collections.Counter(event_id for _, event_id in calls)
    repeated = sorted(event_id for event_id, n in times.items() if n > 1)
    assert all(n <= 2 for n in times.values())
    # Repeated: only the group that died, uncommitted: a run of consecutive
    # events that ends with the crash, no longer than a group.
    assert repeated[-1] == crash_id
    assert repeated == ids[ids.index(repeated[0]) : ids.index(crash_id) + 1]
    assert len(repeated) <= GROUP_MAX
    assert committed_by_crashed == ids.index(repeated[0])  # all before the group
