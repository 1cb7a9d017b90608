"""django_pgpubsub.testing: the helpers users test their own code with."""

from __future__ import annotations

import pytest
from django.db import transaction

from django_pgpubsub import Event, Registry, notify
from django_pgpubsub.testing import capture_events, dispatch
from tests.testapp.models import Order, Received


@pytest.mark.django_db(transaction=True)
def test_capture_events_collects_what_was_committed() -> None:
    with capture_events("testapp.order", "audit") as events:
        order = Order.objects.create()
        notify("audit", {"order": order.pk})
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            notify("audit", "rolled back")
            1 / 0  # noqa: B018
        notify("elsewhere", "not captured")
    assert [(e.channel, e.data.get("event")) for e in events] == [
        ("testapp.order", "created"),
        ("audit", None),
    ]
    assert events[1].data == {"order": order.pk}


@pytest.mark.django_db(transaction=True)
def test_dispatch_runs_the_registered_handlers() -> None:
    event = dispatch("test.b", {"x": 1})
    assert event == Event("test.b", '{"x":1}', 0)
    assert list(Received.objects.values_list("handler", flat=True)) == [
        "recorder",
        "second_for_b",
    ]


def test_dispatch_propagates_errors_and_refuses_unknown_channels() -> None:
    handlers = Registry()

    def broken(event: Event) -> None:
        raise ValueError(event.payload)

    handlers.register(broken, "c")
    with pytest.raises(ValueError, match="boom"):
        dispatch("c", "boom", handlers=handlers)
    with pytest.raises(LookupError, match="'nope'"):
        dispatch("nope", handlers=handlers)
