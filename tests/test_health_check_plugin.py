"""The django-health-check plugin (extra [health]; django-health-check 4 needs
Django 5.2, so the Django 4.2 run does not install it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import RequestFactory

from django_pgpubsub import Registry, notify
from django_pgpubsub.listener import Listener
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ListenerThread

pytest.importorskip("health_check")

from health_check.views import HealthCheckView

pytestmark = pytest.mark.django_db(transaction=True)

PLUGIN = "django_pgpubsub.contrib.health_check.PubSub"


def get(*checks: Any) -> tuple[int, dict[str, str]]:
    view = HealthCheckView.as_view(checks=checks)
    response = async_to_sync(view)(RequestFactory().get("/ht/", {"format": "json"}))
    return response.status_code, json.loads(response.content)


def test_healthy() -> None:
    status, body = get(PLUGIN)
    assert status == 200
    assert list(body.values()) == ["OK"]


def test_a_failed_durable_event_makes_it_unavailable() -> None:
    notify("mail", "x", durable=True)
    OutboxEvent.objects.update(state=OutboxEvent.State.FAILED)
    status, body = get(PLUGIN)
    assert status == 500
    assert list(body.values()) == [
        "Unavailable: failed_events: 1 failed durable event(s), 1 more than the 0 "
        "allowed; see `manage.py durable_events`"
    ]
    assert get((PLUGIN, {"max_failed": 1}))[0] == 200


def test_options_require_a_listener_per_channel() -> None:
    status, body = get((PLUGIN, {"require_listener": True, "channels": ("a",)}))
    assert status == 500
    assert "no listen_events process listens on channel(s) ['a']" in next(iter(body.values()))
    handlers = Registry()
    handlers.register(print, "a")
    with ListenerThread(Listener(registry=handlers, durable=False)).wait_connected():
        assert get((PLUGIN, {"require_listener": True, "channels": ("a",)}))[0] == 200
