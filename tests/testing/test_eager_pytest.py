"""The pubsub_eager fixture (pytest11 entry point) under pytest-django."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib.metadata import entry_points
from typing import Any

import pytest
from django.db import transaction

from django_pgpubsub import notify
from django_pgpubsub.testing import Published
from tests.testapp.models import Item, Order, Received

Capture = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]


def test_the_fixture_runs_handlers_at_the_captured_commit(
    pubsub_eager: Published, django_capture_on_commit_callbacks: Capture
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        order = Order.objects.create()
        Item.objects.bulk_create([Item(name="a"), Item(name="b")])
        notify("test.a", "x")
        assert pubsub_eager == []
    pubsub_eager.assert_published("testapp.order", event="created", pk=order.pk)
    pubsub_eager.assert_published("testapp.item", event="created", count=2)
    assert list(Received.objects.values_list("handler", flat=True)) == ["order created", "recorder"]


@pytest.mark.django_db(transaction=True)
def test_the_fixture_in_a_transactional_test(pubsub_eager: Published) -> None:
    with transaction.atomic():
        notify("test.a", "x")
        assert not Received.objects.exists()
    assert Received.objects.get().payload == "x"
    assert [e.payload for e in pubsub_eager] == ["x"]


def test_the_plugin_is_an_installed_entry_point() -> None:
    [plugin] = [e for e in entry_points(group="pytest11") if e.name == "django_pgpubsub"]
    assert plugin.value == "django_pgpubsub.testing.pytest_plugin"
