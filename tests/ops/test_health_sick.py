"""Health checks and metrics against sick databases: each ends within its bound
and says what it could not check, instead of hanging.

The bounds are asserted by the calls returning (inside a generous outer
deadline, :func:`tests.sickdb.finishes`), never by timing them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from django_pgpubsub import notify
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.ops.health import check_health
from django_pgpubsub.ops.metrics import ListenerMetrics
from tests.helpers import health
from tests.ops.test_metrics import collect
from tests.sickdb import (
    FreezingProxy,
    SilentServer,
    alias_at,
    finishes,
    locked_outbox,
    server_address,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_pubsub_health_fails_on_a_server_that_never_answers(silent: SilentServer) -> None:
    with alias_at(silent.port):
        status, out = finishes(lambda: health("--timeout", "2"))
    assert status == 1
    assert out == "database: cannot reach 'default': no answer within 2 s\n"


def test_pubsub_health_fails_on_a_locked_outbox() -> None:
    notify("locked.channel", "x", durable=True)
    with locked_outbox():
        status, out = finishes(lambda: health("--timeout", "2", "--json"))
    report = json.loads(out)
    assert status == 1
    checks = report["checks"]
    assert checks["database"]["ok"] is True  # what does not need the outbox passed
    assert checks["queue_usage"]["ok"] is True
    for name in ("failed_events", "oldest_pending", "unhandled_channels"):
        assert checks[name]["ok"] is False, name
        assert "did not finish" in checks[name]["detail"], checks[name]
    assert "lock timeout" in checks["oldest_pending"]["detail"]

    assert health()[0] == 0  # the lock is gone


def test_a_locked_outbox_does_not_keep_the_listener_check_from_running() -> None:
    with locked_outbox():
        report = finishes(lambda: check_health(require_listener=True, timeout=2))
    assert not report.checks["listener"].ok
    assert report.checks["listener"].detail.startswith("no listen_events process is connected")


def test_a_server_that_stops_answering_mid_session_is_a_failed_check() -> None:
    """No server-side timeout can fire when the server hears nothing: the
    checks' thread is given up on, and the report says so."""
    proxy = FreezingProxy(*server_address())
    try:
        with alias_at(proxy.port):
            assert finishes(lambda: check_health(timeout=5)).healthy  # through the proxy
            proxy.freeze()
            report = finishes(lambda: check_health(timeout=1))
    finally:
        proxy.close()
    assert not report.healthy
    assert report.failures() == ["database: cannot reach 'default': no answer within 1 s"]


def test_a_bad_timeout_is_refused() -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive number of seconds"):
            check_health(timeout=bad)


# The django-health-check plugin (extra [health]; version 4, where Django is 5.2+).


def plugin_status(*checks: object) -> tuple[int, str]:
    pytest.importorskip("health_check.base", reason="django-health-check 3 here (Django 4.2)")
    from asgiref.sync import async_to_sync
    from django.test import RequestFactory
    from health_check.views import HealthCheckView

    view = HealthCheckView.as_view(checks=checks)
    response = async_to_sync(view)(RequestFactory().get("/ht/", {"format": "json"}))
    return response.status_code, next(iter(json.loads(response.content).values()))


PLUGIN = "django_pgpubsub.contrib.health_check.PubSub"


def test_plugin_fails_on_a_server_that_never_answers(silent: SilentServer) -> None:
    with alias_at(silent.port):
        status, message = finishes(
            lambda: plugin_status((PLUGIN, {"timeout": timedelta(seconds=2)}))
        )
    assert status == 500
    assert message == "Unavailable: database: cannot reach 'default': no answer within 2 s"


def test_plugin_fails_on_a_locked_outbox() -> None:
    with locked_outbox():
        status, message = finishes(
            lambda: plugin_status((PLUGIN, {"timeout": timedelta(seconds=2)}))
        )
    assert status == 500
    assert message.startswith("Unavailable: failed_events: did not finish"), message


def test_plugin_check_reports_before_django_health_checks_own_timeout() -> None:
    """django-health-check 4 waits for a check its ``timeout`` and a second
    more; the plugin's own bound (5 s by default) reports first, with the reason."""
    pytest.importorskip("health_check")
    from django_pgpubsub.contrib.health_check import PubSub

    assert PubSub().timeout == timedelta(seconds=5)
    with locked_outbox():
        status, message = finishes(lambda: plugin_status(PLUGIN))
    assert status == 500
    assert "did not finish" in message, message


def test_plugin_version_3_is_bounded_too(silent: SilentServer) -> None:
    """django-health-check 3 has no timeout of its own: the check's is the only one."""
    pytest.importorskip("health_check")
    from health_check.exceptions import ServiceUnavailable

    from django_pgpubsub.contrib.health_check import PubSub

    with alias_at(silent.port), pytest.raises(ServiceUnavailable, match="no answer within 2 s"):
        finishes(PubSub(timeout=timedelta(seconds=2)).check_status)


# The metrics scrape.


def test_a_scrape_ends_on_a_locked_outbox_and_serves_the_last_values() -> None:
    notify("m.locked", "x", durable=True)
    metrics = ListenerMetrics(
        "default", channels=["m.locked"], refresh_interval=0, refresh_timeout=2
    )
    assert collect(metrics)['pgpubsub_durable_pending{channel="m.locked"}'] == 1
    with locked_outbox():
        samples = finishes(lambda: collect(metrics))
    assert samples['pgpubsub_durable_pending{channel="m.locked"}'] == 1  # the last values
    assert samples["pgpubsub_gauge_refresh_failures_total"] == 1
    OutboxEvent.objects.all().delete()
    metrics.refresh_interval = 0
    samples = collect(metrics)  # the failed refresh holds nothing back
    assert 'pgpubsub_durable_pending{channel="m.locked"}' not in samples
    assert samples["pgpubsub_gauge_refresh_failures_total"] == 1


def test_a_hung_refresh_does_not_block_later_scrapes() -> None:
    """A refresh stuck on a server that stopped answering: its scrape gives up
    on it, and the scrapes after it do not wait for it at all."""
    notify("m.hung", "x", durable=True)
    proxy = FreezingProxy(*server_address())
    try:
        with alias_at(proxy.port):
            metrics = ListenerMetrics(
                "default", channels=["m.hung"], refresh_interval=0, refresh_timeout=1
            )
            assert collect(metrics)['pgpubsub_durable_pending{channel="m.hung"}'] == 1
            proxy.freeze()
            first = finishes(lambda: collect(metrics))
            still_stuck = any(t.name == "pgpubsub-gauges" for t in threading.enumerate())
            later = [finishes(lambda: collect(metrics)) for _ in range(3)]
    finally:
        proxy.close()
    assert still_stuck, "the refresh was expected to be still stuck"
    assert first["pgpubsub_gauge_refresh_failures_total"] == 1
    for samples in [first, *later]:
        assert samples['pgpubsub_durable_pending{channel="m.hung"}'] == 1
