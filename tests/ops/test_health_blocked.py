"""pubsub_health and ordering keys blocked by a real failed attempt: a warning
line by default, a failed check past ``--max-blocked-age``."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from django_pgpubsub import Registry, notify
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.ops.health import check_health
from tests.helpers import health

pytestmark = pytest.mark.django_db(transaction=True)


def fail_the_head_of_key_a() -> None:
    """Store a1, a2 (key "a") and b1; a listener's attempt of a1 fails, which
    holds a2 back; b1 is handled."""

    def handle(event: object) -> None:
        if getattr(event, "payload", None) == "a1":
            raise RuntimeError("a1 fails")

    registry = Registry()
    registry.register(handle, "jobs")
    for payload, key in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        notify("jobs", payload, durable=True, ordering_key=key)
    Listener(["jobs"], registry=registry, max_events=2).run()
    assert sorted(OutboxEvent.objects.values_list("payload", "attempts")) == [("a1", 1), ("a2", 0)]


@override_settings(PGPUBSUB={"DURABLE_RETRY_DELAY": 3600, "DURABLE_POLL_INTERVAL": 0.2})
def test_a_key_waiting_for_a_retry_is_a_warning_until_it_passes_the_limit() -> None:
    status, out = health()
    assert status == 0
    assert "blocked_keys" in out
    assert "warning: blocked_keys" not in out
    fail_the_head_of_key_a()

    status, out = health("--max-blocked-age", "3600")
    assert status == 0
    [warning] = [line for line in out.splitlines() if line.startswith("warning: blocked")]
    assert warning.startswith(
        "warning: blocked_keys: 1 ordering key(s) blocked by a failed attempt; "
        "the oldest event held back waits for "
    )
    assert warning.endswith(" s; see `manage.py durable_events`")
    assert out.splitlines()[-1].startswith("healthy: ")
    # Listed as a warning (with the channel no listener handles), not as healthy.
    assert out.splitlines()[-1].endswith("; warning: blocked_keys, unhandled_channels")

    # a2 has waited two hours behind a1.
    OutboxEvent.objects.filter(payload="a2").update(created_at=timezone.now() - timedelta(hours=2))
    assert health()[0] == 0  # no limit given: still a warning only
    status, out = health("--max-blocked-age", "3600")
    assert status == 1
    [line] = [line for line in out.splitlines() if not line.startswith("warning:")]
    assert line.startswith(
        "blocked_keys: 1 ordering key(s) blocked by a failed attempt; the oldest event "
        "held back waits for 720"
    )
    assert line.endswith(" s, over the limit of 3600 s")

    status, out = health("--json", "--max-blocked-age", "3600")
    check = json.loads(out)["checks"]["blocked_keys"]
    assert check["ok"] is False
    assert check["value"]["keys"] == 1
    assert 7200 <= check["value"]["oldest_seconds"] < 7200 + 600


@override_settings(
    PGPUBSUB={
        "DURABLE_MAX_ATTEMPTS": 1,
        "DURABLE_POLL_INTERVAL": 0.2,
        "ORDERING_ON_DEAD_LETTER": "block",
    }
)
def test_a_dead_letter_holds_its_key_under_block_and_not_under_continue() -> None:
    fail_the_head_of_key_a()
    assert OutboxEvent.objects.get(payload="a1").state == "failed"
    report = check_health(max_failed=1, max_blocked_age=0)
    assert report.checks["blocked_keys"].ok is False
    assert report.checks["blocked_keys"].value["keys"] == 1
    assert not report.healthy
    with override_settings(PGPUBSUB={"ORDERING_ON_DEAD_LETTER": "continue"}):
        report = check_health(max_failed=1, max_blocked_age=0)
    assert report.checks["blocked_keys"].value == {"keys": 0, "oldest_seconds": None}
    assert report.healthy


@override_settings(PGPUBSUB={"DURABLE_RETRY_DELAY": 3600, "DURABLE_POLL_INTERVAL": 0.2})
def test_the_django_health_check_plugin_takes_the_option() -> None:
    pytest.importorskip("health_check")
    from django_pgpubsub.contrib.health_check import PubSub

    fail_the_head_of_key_a()
    PubSub().run()  # a warning only
    with pytest.raises(Exception, match=r"blocked_keys: 1 ordering key\(s\) blocked"):
        PubSub(max_blocked_age=0).run()


def test_the_option_refuses_a_negative_age() -> None:
    with pytest.raises(CommandError, match="at least 0"):
        call_command("pubsub_health", "--max-blocked-age", "-1")
