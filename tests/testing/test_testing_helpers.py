"""django_pgpubsub.testing: the helpers users test their own code with."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import TestCase

from django_pgpubsub import DurableEvent, Event, Registry, notify
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.testing import NotCommitted, Published, capture_events, dispatch
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


class CaptureInTestCase(TestCase):
    def test_recorded_at_the_captured_commit(self) -> None:
        with (
            capture_events("audit", "testapp.order") as events,
            self.captureOnCommitCallbacks(execute=True),
        ):
            order = Order.objects.create()
            notify("audit", "kept")
            notify("elsewhere", "not captured")
            with pytest.raises(ZeroDivisionError), transaction.atomic():
                notify("audit", "rolled back")
                1 / 0  # noqa: B018
            notify("audit", "durable", durable=True)
        assert [(e.channel, e.payload[:20]) for e in events] == [
            ("testapp.order", '{"event":"created","'),
            ("audit", "kept"),
            ("audit", "durable"),
        ]
        events.assert_published("testapp.order", pk=order.pk)
        durable = events[2]
        assert isinstance(durable, DurableEvent)
        assert durable.attempt == 0  # recorded only: no handler ran, it stays pending
        assert OutboxEvent.objects.get(id=durable.id).state == "pending"
        assert not Received.objects.exists()

    def test_says_why_it_saw_nothing(self) -> None:
        with (
            pytest.raises(NotCommitted, match=r"1 more were published on \['audit'\]"),
            capture_events("audit"),
        ):
            notify("audit", "never committed")
            notify("other", "not captured")

    def test_nothing_published_is_an_empty_list(self) -> None:
        with capture_events("audit") as events:
            notify("other", "not captured")
        assert events == []


def test_dispatch_builds_durable_events() -> None:
    handlers = Registry()
    seen: list[Event] = []
    handlers.register(seen.append, "c")
    first = dispatch("c", {"x": 1}, handlers=handlers, durable=True)
    second = dispatch("c", "y", handlers=handlers, id=41, attempt=3)
    assert isinstance(first, DurableEvent)
    assert (first.data, first.attempt) == ({"x": 1}, 1)
    assert second == DurableEvent("c", "y", 0, 41, 3)
    given = DurableEvent("c", "z", 7, 5, 2)
    assert dispatch(given, handlers=handlers) is given
    assert seen == [first, second, given]
    with pytest.raises(TypeError, match="alone"):
        dispatch(given, "payload", handlers=handlers)


def test_assert_published_explains_what_it_saw() -> None:
    events = Published()
    assert events.on("a") == []
    with pytest.raises(AssertionError, match="No event was seen at all"):
        events.assert_published("a")
    events.extend([Event("a", '{"pk":1}', 0), Event("b", "text", 0)])
    assert events.assert_published("a", pk=1) == [events[0]]
    assert events.assert_published("b") == [events[1]]
    with pytest.raises(AssertionError) as failure:
        events.assert_published("a", pk=2)
    assert str(failure.value) == (
        "No event on 'a' with pk=2.\n"
        "Events on 'a':\n"
        '  a: {"pk":1}\n'
        "Events on other channels:\n"
        "  b: text"
    )
    with pytest.raises(AssertionError, match="No event on 'b' with x=1"):
        events.assert_published("b", x=1)  # not a JSON object: matches no keyword
    events.assert_not_published("a", pk=2)
    with pytest.raises(AssertionError, match=r"Unexpected event\(s\) on 'a':\n  a: \{\"pk\":1\}"):
        events.assert_not_published("a")
