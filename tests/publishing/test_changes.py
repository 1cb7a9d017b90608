"""publish_changes: statement-level triggers on a real PostgreSQL, for every kind of write."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pgtrigger
import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test import Client, override_settings

from django_pgpubsub import (
    Event,
    InvalidPayload,
    PayloadTooLarge,
    PubSub,
    Registry,
    notify,
    publish_changes,
    publish_context,
    publish_on_save,
    unpublish_changes,
)
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.vocabulary.payload import MAX_PAYLOAD_BYTES
from tests.helpers import collect, run_listener, run_sql
from tests.testapp.models import (
    Cinema,
    Code,
    DurableItem,
    Gadget,
    Item,
    Order,
    Ticket,
    Tracked,
    Venue,
)

pytestmark = pytest.mark.django_db(transaction=True)


def nothing_else(pubsub: PubSub) -> bool:
    """True when nothing is queued before a marker sent now.

    PostgreSQL delivers in commit order, so anything committed before arrives
    first: no waiting for something that should not come.
    """
    channel = sorted(pubsub.channels)[0]
    notify(channel, "marker")
    return [e.payload for e in collect(pubsub, 1)] == ["marker"]


def items(*names: str) -> list[int]:
    """Create items without publishing anything the test listens to."""
    return [Item.objects.create(name=name).pk for name in names]


# Each write: (name, write(url, existing pks) -> (event, pks) it should publish).
Write = Callable[[str, list[int]], tuple[str, list[int]]]


def bulk_create(url: str, pks: list[int]) -> tuple[str, list[int]]:
    created = Item.objects.bulk_create([Item(name="c1"), Item(name="c2")])
    return "created", [item.pk for item in created]


def queryset_update(url: str, pks: list[int]) -> tuple[str, list[int]]:
    Item.objects.filter(pk__in=pks[:2]).update(status="shipped")
    return "updated", pks[:2]


def bulk_update(url: str, pks: list[int]) -> tuple[str, list[int]]:
    objs = list(Item.objects.filter(pk__in=pks))
    for obj in objs:
        obj.quantity = 7
    Item.objects.bulk_update(objs, ["quantity"])
    return "updated", pks


def queryset_delete(url: str, pks: list[int]) -> tuple[str, list[int]]:
    Item.objects.filter(pk=pks[0]).delete()
    return "deleted", pks[:1]


def raw_sql(url: str, pks: list[int]) -> tuple[str, list[int]]:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE testapp_item SET quantity = quantity + 1 WHERE id = ANY(%s)", [pks])
    return "updated", pks


WRITES: list[Write] = [bulk_create, queryset_update, bulk_update, queryset_delete, raw_sql]


@pytest.mark.parametrize("write", WRITES, ids=[w.__name__ for w in WRITES])
def test_django_writes_publish_at_commit_and_nothing_on_rollback(
    pubsub: PubSub, test_database_url: str, write: Write
) -> None:
    pks = items("a", "b", "c")
    pubsub.listen("testapp.item")
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        write(test_database_url, pks)
        1 / 0  # noqa: B018
    assert nothing_else(pubsub)
    with transaction.atomic():
        event, expected = write(test_database_url, pks)
    [got] = collect(pubsub, 1)
    assert got.channel == "testapp.item"
    assert got.data == {
        "event": event,
        "model": "testapp.item",
        "pks": got.data["pks"],
        "count": len(expected),
    }
    assert sorted(got.data["pks"]) == sorted(expected)
    assert nothing_else(pubsub)


def test_another_programs_writes_are_published(pubsub: PubSub, test_database_url: str) -> None:
    pubsub.listen("testapp.item")
    insert = "INSERT INTO testapp_item (name, status, quantity) VALUES ('p', 'x', 0)"
    run_sql(test_database_url, f"BEGIN; {insert}; ROLLBACK")
    assert nothing_else(pubsub)
    [(pk,)] = run_sql(test_database_url, f"{insert} RETURNING id")
    [got] = collect(pubsub, 1)
    assert got.data == {"event": "created", "model": "testapp.item", "pks": [pk], "count": 1}
    run_sql(test_database_url, "DELETE FROM testapp_item")
    [got] = collect(pubsub, 1)
    assert got.data == {"event": "deleted", "model": "testapp.item", "pks": [pk], "count": 1}


def test_truncate_is_not_published(pubsub: PubSub) -> None:
    items("a", "b")
    pubsub.listen("testapp.item")
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE testapp_item")
    assert nothing_else(pubsub)


def test_a_statement_that_changes_no_row_publishes_nothing(pubsub: PubSub) -> None:
    pubsub.listen("testapp.item")
    Item.objects.filter(name="nobody").update(status="x")
    Item.objects.filter(name="nobody").delete()
    assert nothing_else(pubsub)


def parts_of(pubsub: PubSub, timeout: float = 30.0) -> list[Event]:
    """Every part of one split change, checked for numbering and size."""
    first = collect(pubsub, 1, timeout)[0]
    parts = first.data["parts"]
    events = [first, *collect(pubsub, parts - 1, timeout)]
    assert sorted(e.data["part"] for e in events) == list(range(1, parts + 1))
    for event in events:
        assert len(event.payload.encode()) <= MAX_PAYLOAD_BYTES
        assert event.data["parts"] == parts
    return events


def test_uuid_keys_too_many_for_one_notification_are_split(pubsub: PubSub) -> None:
    Ticket.objects.bulk_create([Ticket(title="t") for _ in range(2000)])
    pubsub.listen("testapp.ticket")
    with publish_context(user=42):
        Ticket.objects.update(title="u")
    events = parts_of(pubsub)
    assert len(events) > 5  # 2000 UUIDs are about 78,000 bytes of JSON
    received = [pk for e in events for pk in e.data["pks"]]
    assert sorted(received) == sorted(str(pk) for pk in Ticket.objects.values_list("pk", flat=True))
    for event in events:
        assert event.data["count"] == 2000
        assert event.data["event"] == "updated"
        assert event.data["context"] == {"user": 42}


def test_text_keys_are_measured_in_bytes_and_escaped(pubsub: PubSub) -> None:
    codes = [f'é"ключ\\{i}' + "x" * 60 for i in range(400)]
    pubsub.listen("testapp.code")
    Code.objects.bulk_create([Code(code=code) for code in codes])
    events = parts_of(pubsub)
    assert len(events) > 3
    assert sorted(pk for e in events for pk in e.data["pks"]) == sorted(codes)


def test_a_key_too_large_for_any_notification_is_announced_without_keys(
    pubsub: PubSub,
) -> None:
    pubsub.listen("testapp.code")
    Code.objects.create(code="k" * 8500)
    [got] = collect(pubsub, 1)
    assert got.data == {
        "event": "created",
        "model": "testapp.code",
        "pks": None,
        "count": 1,
        "truncated": True,
    }


@pytest.mark.slow
def test_a_100000_row_update_arrives_whole_in_parts(pubsub: PubSub) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO testapp_item (name, status, quantity)"
            " SELECT 'n', 'new', 0 FROM generate_series(1, 100000)"
        )
    pubsub.listen("testapp.item")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE testapp_item SET quantity = quantity + 1")
    events = parts_of(pubsub, timeout=60)
    received = [pk for e in events for pk in e.data["pks"]]
    assert len(received) == 100_000
    assert set(received) == set(Item.objects.values_list("pk", flat=True))
    assert {e.data["count"] for e in events} == {100_000}


def test_a_huge_context_is_dropped_rather_than_failing_the_write(pubsub: PubSub) -> None:
    [pk] = items("a")
    pubsub.listen("testapp.item")
    context = json.dumps({"note": "x" * 7990})
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('pgpubsub.context', %s, true)", [context])
        cursor.execute("UPDATE testapp_item SET quantity = 1")
    [got] = collect(pubsub, 1)
    assert got.data["pks"] == [pk]
    assert got.data["context"] is None


def test_changed_publishes_only_rows_whose_columns_changed(pubsub: PubSub) -> None:
    a, b, _ = (Tracked.objects.create(status=s) for s in ("new", "new", "done"))
    pubsub.listen("tracked")
    Tracked.objects.update(note="only another column")
    assert nothing_else(pubsub)
    Tracked.objects.update(status="done")
    [got] = collect(pubsub, 1)
    assert sorted(got.data["pks"]) == sorted([a.pk, b.pk])
    assert got.data["count"] == 2
    Tracked.objects.update(status="done")  # nothing changes
    Tracked.objects.create()  # only updates are published
    assert nothing_else(pubsub)


def test_changed_leaves_out_rows_whose_key_changed(pubsub: PubSub) -> None:
    a, b = (Tracked.objects.create(status="new") for _ in range(2))
    pubsub.listen("tracked")
    moved = a.pk + 1_000_000
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE testapp_tracked SET status = 'done', "
            "id = CASE WHEN id = %s THEN %s ELSE id END WHERE id IN (%s, %s)",
            [a.pk, moved, a.pk, b.pk],
        )
    [got] = collect(pubsub, 1)
    assert (got.data["pks"], got.data["count"]) == ([b.pk], 1)
    assert Tracked.objects.filter(pk=moved, status="done").exists()


def test_a_durable_change_stores_every_key_in_one_row_without_parts() -> None:
    with transaction.atomic():
        created = DurableItem.objects.bulk_create([DurableItem(name="x") for _ in range(3000)])
    [row] = OutboxEvent.objects.all()
    payload = json.loads(row.payload)
    assert len(row.payload.encode()) > MAX_PAYLOAD_BYTES
    assert payload == {
        "event": "created",
        "model": "testapp.durableitem",
        "pks": [d.pk for d in created],
        "count": 3000,
    }


def test_durable_change_is_handled_by_a_listener_started_later() -> None:
    with transaction.atomic():
        created = DurableItem.objects.bulk_create([DurableItem(name="a"), DurableItem(name="b")])
    [row] = OutboxEvent.objects.all()
    assert json.loads(row.payload) == {
        "event": "created",
        "model": "testapp.durableitem",
        "pks": [d.pk for d in created],
        "count": 2,
    }
    handled: list[Event] = []
    handlers = Registry()
    handlers.register(handled.append, "test.changes.durable")
    assert run_listener(handlers, channels=["test.changes.durable"], max_events=1) == 1
    assert [e.data["pks"] for e in handled] == [[d.pk for d in created]]
    assert not OutboxEvent.objects.exists()


def test_context_reaches_trigger_and_signal_payloads_and_not_the_next_transaction(
    pubsub: PubSub,
) -> None:
    items("a")
    pubsub.listen("testapp.item", "testapp.order")
    with publish_context(user=7, request="r1") as context:
        assert context == {"user": 7, "request": "r1"}
        Item.objects.update(status="x")
        order = Order.objects.create()
        with publish_context(user=8):
            Item.objects.update(status="y")
        Item.objects.create(name="b")  # an update would repeat the first payload
    trigger1, signal, trigger2, trigger3 = collect(pubsub, 4)
    assert trigger1.data["context"] == {"user": 7, "request": "r1"}
    assert signal.data["pk"] == order.pk
    assert signal.data["context"] == {"user": 7, "request": "r1"}
    assert trigger2.data["context"] == {"user": 8, "request": "r1"}
    assert trigger3.data["event"] == "created"
    assert trigger3.data["context"] == {"user": 7, "request": "r1"}
    # The next transaction, on the same connection, carries no context.
    Item.objects.update(status="w")
    order.save()
    after = collect(pubsub, 2)
    assert [("context" in e.data) for e in after] == [False, False]
    assert after[0].data["count"] == 2


def test_context_set_inside_a_transaction_ends_with_its_block(pubsub: PubSub) -> None:
    items("a")
    pubsub.listen("testapp.item")
    with transaction.atomic():
        with publish_context(user=1):
            Item.objects.update(status="x")
        Item.objects.update(status="y")
    inside, after = collect(pubsub, 2)
    assert inside.data["context"] == {"user": 1}
    assert "context" not in after.data


def test_the_context_block_is_atomic_and_a_savepoint_inside_a_transaction() -> None:
    with pytest.raises(ZeroDivisionError), publish_context(user=1):
        Item.objects.create(name="gone")
        1 / 0  # noqa: B018
    assert not Item.objects.filter(name="gone").exists()
    with transaction.atomic():
        Item.objects.create(name="kept")
        with pytest.raises(ZeroDivisionError), publish_context(user=1):
            Item.objects.create(name="gone")
            1 / 0  # noqa: B018
    assert list(Item.objects.values_list("name", flat=True)) == ["kept"]


def test_middleware_example_records_the_user_of_a_request(pubsub: PubSub) -> None:
    [pk] = items("a")
    user = User.objects.create(username="ann")
    client = Client()
    client.force_login(user)
    pubsub.listen("testapp.item")
    middleware = [*settings.MIDDLEWARE, "tests.testapp.middleware.publish_user"]
    with override_settings(MIDDLEWARE=middleware):
        assert client.post("/items/sell/").content == b"1"
    [got] = collect(pubsub, 1)
    assert got.data["pks"] == [pk]
    assert got.data["context"] == {"user": user.pk}


def test_context_must_be_small_json() -> None:
    with pytest.raises(PayloadTooLarge, match="at most 1000 bytes"), publish_context(n="x" * 1000):
        pass  # pragma: no cover - never entered
    with pytest.raises(InvalidPayload), publish_context(n=object()):
        pass  # pragma: no cover - never entered


def test_pgtrigger_ignore_silences_one_trigger(pubsub: PubSub) -> None:
    [pk] = items("a")
    pubsub.listen("testapp.item")
    with pgtrigger.ignore("testapp.Item:pgpubsub_updated"):
        Item.objects.update(status="quiet")
        Item.objects.filter(pk=pk).delete()
    [got] = collect(pubsub, 1)
    assert got.data["event"] == "deleted"
    assert nothing_else(pubsub)


def test_non_default_schema_table(pubsub: PubSub) -> None:
    pubsub.listen("testapp.gadget")
    try:
        gadget = Gadget.objects.create(name="g")
        [got] = collect(pubsub, 1)
        assert got.data == {
            "event": "created",
            "model": "testapp.gadget",
            "pks": [gadget.pk],
            "count": 1,
        }
    finally:
        Gadget.objects.all().delete()  # flush skips tables outside the search path


def test_multi_table_inheritance_each_table_publishes_its_own_writes(pubsub: PubSub) -> None:
    pubsub.listen("testapp.venue", "testapp.cinema")
    cinema = Cinema.objects.create(name="r", film="Ran")
    venue_event, cinema_event = collect(pubsub, 2)
    assert (venue_event.channel, venue_event.data["pks"]) == ("testapp.venue", [cinema.pk])
    assert (cinema_event.channel, cinema_event.data["pks"]) == (
        "testapp.cinema",
        [cinema.pk],
    )
    # A parent column lives in the parent's table: only the parent publishes.
    Cinema.objects.filter(pk=cinema.pk).update(name="renamed")
    [got] = collect(pubsub, 1)
    assert (got.channel, got.data["event"]) == ("testapp.venue", "updated")
    Cinema.objects.filter(pk=cinema.pk).update(film="Ikiru")
    [got] = collect(pubsub, 1)
    assert (got.channel, got.data["model"]) == ("testapp.cinema", "testapp.cinema")
    Cinema.objects.filter(pk=cinema.pk).delete()
    deleted = collect(pubsub, 2)
    assert sorted((e.channel, e.data["event"], e.data["pks"][0]) for e in deleted) == [
        ("testapp.cinema", "deleted", cinema.pk),
        ("testapp.venue", "deleted", cinema.pk),
    ]
    assert nothing_else(pubsub)


def test_a_model_of_another_app_gets_a_proxy_in_the_callers_app(pubsub: PubSub) -> None:
    proxy = apps.get_model("testapp", "PublishedPermission")
    assert proxy._meta.proxy
    assert proxy._meta.concrete_model is Permission
    assert not getattr(Permission._meta, "triggers", [])  # nothing for auth's migrations
    pubsub.listen("auth.permission")
    permission = Permission.objects.create(
        codename="x", name="x", content_type=ContentType.objects.get_for_model(Item)
    )
    [got] = collect(pubsub, 1)
    assert got.data == {
        "event": "created",
        "model": "auth.permission",
        "pks": [permission.pk],
        "count": 1,
    }


def test_called_from_outside_any_installed_app_the_triggers_go_to_the_models_own_app() -> None:
    assert apps.get_containing_app_config(__name__) is None  # tests/ is not an app
    proxies = {m for m in apps.get_models() if m._meta.proxy}
    publish_changes(Group, events=("created",))
    try:
        assert [t.name for t in getattr(Group._meta, "triggers", [])] == ["pgpubsub_created"]
        assert {m for m in apps.get_models() if m._meta.proxy} == proxies  # no proxy made
    finally:
        unpublish_changes(Group)
    assert not getattr(Group._meta, "triggers", [])


def test_publishing_a_model_both_ways_is_an_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="publish_changes"):
        publish_on_save(Item)
    with pytest.raises(ImproperlyConfigured, match="publish_on_save"):
        publish_changes(Order)
    with pytest.raises(ImproperlyConfigured, match="already published"):
        publish_changes(Item)
    with pytest.raises(ImproperlyConfigured, match="already published"):
        publish_changes(Venue)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"events": ("saved",)}, "takes some of"),
        ({"events": "created"}, "not a str"),
        ({"changed": ("nope",)}, "no field 'nope'"),
        ({"changed": ()}, "leave it None"),
        ({"changed": ("name",)}, "own table"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        publish_changes(Cinema if "changed" in kwargs else Order, **kwargs)
