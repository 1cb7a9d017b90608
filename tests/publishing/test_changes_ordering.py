"""publish_changes(..., durable=True, ordering="pk"): one outbox row per changed
row, keyed by the row, so that one row's changes are handled in order."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings

from django_pgpubsub import DurableEvent, Event, Registry, publish_changes, publish_context
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.testing import eager
from tests.helpers import run_listener
from tests.testapp.models import DurableItem, OrderedCode, OrderedItem, Received

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "test.changes.ordered"


def stored() -> list[tuple[str | None, dict[str, object]]]:
    rows = OutboxEvent.objects.order_by("id").values_list("ordering_key", "payload", "channel")
    assert {channel for *_, channel in rows} <= {CHANNEL}
    return [(key, json.loads(payload)) for key, payload, _ in rows]


def test_a_bulk_update_stores_one_row_per_changed_row_keyed_by_its_pk() -> None:
    items = OrderedItem.objects.bulk_create([OrderedItem(name=n) for n in "abc"])
    OutboxEvent.objects.all().delete()
    with transaction.atomic(), publish_context(user=7):
        assert OrderedItem.objects.update(step=1) == 3
    assert stored() == [
        (
            f"testapp.ordereditem:{item.pk}",
            {
                "event": "updated",
                "model": "testapp.ordereditem",
                "pks": [item.pk],
                "count": 1,
                "context": {"user": 7},
            },
        )
        for item in sorted(items, key=lambda item: item.pk)
    ]


def test_created_and_deleted_rows_are_split_too_and_other_models_are_not() -> None:
    created = OrderedItem.objects.bulk_create([OrderedItem(name="a"), OrderedItem(name="b")])
    pks = [item.pk for item in created]
    OrderedItem.objects.filter(pk=pks[0]).delete()
    DurableItem.objects.bulk_create([DurableItem(name="x"), DurableItem(name="y")])
    rows = OutboxEvent.objects.order_by("id").values_list("ordering_key", "payload")
    assert [
        (key, json.loads(payload)["event"], json.loads(payload)["pks"]) for key, payload in rows
    ] == [
        (f"testapp.ordereditem:{pks[0]}", "created", [pks[0]]),
        (f"testapp.ordereditem:{pks[1]}", "created", [pks[1]]),
        (f"testapp.ordereditem:{pks[0]}", "deleted", [pks[0]]),
        (None, "created", [item.pk for item in DurableItem.objects.order_by("pk")]),
    ]


def test_a_text_key_too_long_for_an_ordering_key_is_named_by_its_md5() -> None:
    short, long = "é" * 10, "x" * 1500
    OrderedCode.objects.bulk_create([OrderedCode(code=short), OrderedCode(code=long)])
    keys = {payload["pks"][0]: key for key, payload in stored()}  # type: ignore[index]
    assert keys[short] == f"testapp.orderedcode:{short}"
    assert keys[long] == f"testapp.orderedcode:md5:{hashlib.md5(long.encode()).hexdigest()}"


@override_settings(PGPUBSUB={"DURABLE_RETRY_DELAY": 0.2, "DURABLE_POLL_INTERVAL": 0.2})
def test_one_rows_changes_run_in_order_even_when_one_fails_and_is_retried(
    registry: Registry,
) -> None:
    """Without ordering keys, the listener would handle a's update while a's
    failed creation waits for its retry."""
    seen: list[tuple[str, int, int]] = []

    def handle(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        [pk] = event.data["pks"]
        seen.append((event.data["event"], pk, event.attempt))
        if pk == a.pk and event.data["event"] == "created" and event.attempt == 1:
            raise RuntimeError("fails once")

    registry.register(handle, CHANNEL)
    a, b = OrderedItem.objects.bulk_create([OrderedItem(name="a"), OrderedItem(name="b")])
    for step in (1, 2):
        OrderedItem.objects.update(step=step)
    OrderedItem.objects.filter(pk=a.pk).delete()
    assert run_listener(registry, channels=[CHANNEL], max_events=8) == 8
    of_a = [(event, attempt) for event, pk, attempt in seen if pk == a.pk]
    assert of_a == [("created", 1), ("created", 2), ("updated", 1), ("updated", 1), ("deleted", 1)]
    of_b = [event for event, pk, _ in seen if pk == b.pk]
    assert of_b == ["created", "updated", "updated"]
    # b's line did not wait for a's retry.
    assert seen.index(("updated", b.pk, 1)) < seen.index(("created", a.pk, 2))
    assert not OutboxEvent.objects.exists()


def test_eager_mode_handles_each_rows_event_at_commit(registry: Registry) -> None:
    seen: list[tuple[str, list[int]]] = []
    registry.register(lambda event: seen.append((event.data["event"], event.data["pks"])), CHANNEL)
    with eager(registry), transaction.atomic():
        items = OrderedItem.objects.bulk_create([OrderedItem(name=n) for n in "abc"])
        OrderedItem.objects.filter(name__in="ab").update(step=1)
        assert seen == []
    pks = sorted(item.pk for item in items)
    assert seen == [("created", [pk]) for pk in pks] + [("updated", [pk]) for pk in pks[:2]]
    assert not OutboxEvent.objects.exists()


def test_eager_mode_rolls_back_with_a_savepoint(registry: Registry) -> None:
    seen: list[Event] = []
    registry.register(seen.append, CHANNEL)
    with eager(registry), transaction.atomic():
        OrderedItem.objects.create(name="kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            OrderedItem.objects.create(name="undone")
            raise RuntimeError
    [kept] = OrderedItem.objects.all()
    assert [event.data["pks"] for event in seen] == [[kept.pk]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ordering": "pk"}, "needs durable=True"),
        ({"ordering": "id", "durable": True}, 'takes "pk" or None'),
    ],
)
def test_ordering_is_refused_without_durable_or_other_than_pk(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        publish_changes(Received, **kwargs)  # type: ignore[call-overload]
