"""The django-health-check plugin (extra [health]): django-health-check 4 where
Django is 5.2 or later (the main run), 3 where it is 4.2 (the psycopg2 run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from django_pgpubsub import Registry, notify
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ListenerThread

pytest.importorskip("health_check")

from django_pgpubsub.contrib.health_check import PubSubPlugin, register

pytestmark = pytest.mark.django_db(transaction=True)

VERSION_4 = importlib.util.find_spec("health_check.base") is not None
only_4 = pytest.mark.skipif(not VERSION_4, reason="django-health-check 3 here (Django 4.2)")
only_3 = pytest.mark.skipif(VERSION_4, reason="django-health-check 4 here")

PLUGIN = "django_pgpubsub.contrib.health_check.PubSub"
FAILED_LINE = (
    "failed_events: 1 failed durable event(s), 1 more than the 0 "
    "allowed; see `manage.py durable_events`"
)


def get(*checks: Any) -> tuple[int, dict[str, str]]:
    from health_check.views import HealthCheckView

    view = HealthCheckView.as_view(checks=checks)
    response = async_to_sync(view)(RequestFactory().get("/ht/", {"format": "json"}))
    return response.status_code, json.loads(response.content)


def fail_one_durable_event() -> None:
    notify("mail", "x", durable=True)
    OutboxEvent.objects.update(state=OutboxEvent.State.FAILED)


@only_4
def test_healthy() -> None:
    status, body = get(PLUGIN)
    assert status == 200
    assert list(body.values()) == ["OK"]


@only_4
def test_a_failed_durable_event_makes_it_unavailable() -> None:
    fail_one_durable_event()
    status, body = get(PLUGIN)
    assert status == 500
    assert list(body.values()) == [f"Unavailable: {FAILED_LINE}"]
    assert get((PLUGIN, {"max_failed": 1}))[0] == 200


@only_4
def test_options_require_a_listener_per_channel() -> None:
    status, body = get((PLUGIN, {"require_listener": True, "channels": ("a",)}))
    assert status == 500
    assert "no listen_events process listens on channel(s) ['a']" in next(iter(body.values()))
    handlers = Registry()
    handlers.register(print, "a")
    with ListenerThread(Listener(registry=handlers, durable=False)).wait_connected():
        assert get((PLUGIN, {"require_listener": True, "channels": ("a",)}))[0] == 200


@only_4
def test_version_4_has_no_registry_to_register_with() -> None:
    with pytest.raises(ImproperlyConfigured, match="no plugin registry"):
        register()


@only_3
def test_version_3_plugin_registers_when_django_starts() -> None:
    from health_check.mixins import CheckMixin
    from health_check.plugins import plugin_dir

    plugin_dir.reset()
    try:
        module = sys.modules["django_pgpubsub.contrib.health_check"]
        PubSubPlugin("django_pgpubsub.contrib.health_check", module).ready()
        assert CheckMixin().run_check() == []
        fail_one_durable_event()
        assert [error.message for error in CheckMixin().run_check()] == [FAILED_LINE]
    finally:
        plugin_dir.reset()
