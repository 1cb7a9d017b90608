"""publish_on_save at the edges: deferred fields, bulk operations, multi-table
inheritance, and models written to a database that is not PostgreSQL."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from django_pgpubsub import PubSub, notify_many, publish_on_save, unpublish_on_save
from tests.helpers import collect, nothing_arrives
from tests.testapp.models import Order, Place, Restaurant, Shipment

pytestmark = pytest.mark.django_db(transaction=True)

ORDER_FIELDS = ["status", "total", "placed_at", "token", "customer", "attachment", "notes"]


def selects_but_notify(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith("SELECT") and "pg_notify" not in q["sql"]
    ]


@pytest.mark.parametrize("load", ["only", "defer"])
def test_deleting_a_deferred_instance_deletes_it_and_reads_no_deferred_field(
    pubsub: PubSub, load: str
) -> None:
    pk = Order.objects.create(status="new", notes="secret").pk
    pubsub.listen("testapp.order")
    collect(pubsub, 0)
    queryset = Order.objects.only("status") if load == "only" else Order.objects.defer("notes")
    order = queryset.get(pk=pk)
    with CaptureQueriesContext(connection) as queries:
        order.delete()
    assert not Order.objects.filter(pk=pk).exists()
    # Django looks for shipments to cascade to; nothing reloads the order.
    assert not [sql for sql in selects_but_notify(queries) if "testapp_order" in sql]
    [event] = collect(pubsub, 1)
    expected_deferred = [f for f in ORDER_FIELDS if f != "status"] if load == "only" else ["notes"]
    assert event.data["event"] == "deleted"
    assert event.data["pk"] == pk
    assert event.data["deferred"] == expected_deferred
    assert sorted(event.data["fields"]) == sorted(set(ORDER_FIELDS) - set(expected_deferred))
    assert event.data["fields"]["status"] == "new"


def test_saving_a_deferred_instance_runs_no_extra_select(pubsub: PubSub) -> None:
    pk = Order.objects.create(status="new").pk
    pubsub.listen("testapp.order")
    order = Order.objects.only("status").get(pk=pk)
    order.status = "paid"
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        order.save()
    assert selects_but_notify(queries) == []
    assert order.get_deferred_fields() == {
        f if f != "customer" else "customer_id" for f in ORDER_FIELDS[1:]
    }
    [event] = collect(pubsub, 1)
    assert event.data == {
        "event": "updated",
        "model": "testapp.order",
        "pk": pk,
        "fields": {"status": "paid"},
        "deferred": ORDER_FIELDS[1:],
    }


def test_a_fully_loaded_instance_has_no_deferred_key(pubsub: PubSub) -> None:
    pubsub.listen("testapp.order")
    Order.objects.create()
    [event] = collect(pubsub, 1)
    assert "deferred" not in event.data


def test_queryset_delete_publishes_each_row_bulk_create_and_update_nothing(
    pubsub: PubSub,
) -> None:
    pubsub.listen("testapp.order")
    orders = Order.objects.bulk_create([Order(status="bulk") for _ in range(3)])
    Order.objects.filter(status="bulk").update(status="bulk2")
    assert nothing_arrives(pubsub)
    deleted, _ = Order.objects.filter(status="bulk2").delete()
    assert deleted == 3
    events = collect(pubsub, 3)
    assert sorted(e.data["pk"] for e in events) == sorted(o.pk for o in orders)
    assert {e.data["event"] for e in events} == {"deleted"}
    assert {e.data["fields"]["status"] for e in events} == {"bulk2"}
    assert nothing_arrives(pubsub)


def test_the_readme_recipe_for_bulk_operations_publishes_each_change_once(
    pubsub: PubSub,
) -> None:
    pubsub.listen("testapp.order")
    with transaction.atomic():
        orders = Order.objects.bulk_create([Order(status="bulk") for _ in range(2)])
        Order.objects.filter(pk__in=[o.pk for o in orders]).update(status="shipped")
        notify_many(
            ("testapp.order", {"event": event, "model": "testapp.order", "pk": o.pk})
            for event in ("created", "updated")
            for o in orders
        )
        Order.objects.filter(pk__in=[o.pk for o in orders]).delete()  # publishes by itself
    events = [(e.data["event"], e.data["pk"]) for e in collect(pubsub, 6)]
    assert sorted(events) == sorted(
        (event, o.pk) for event in ("created", "updated", "deleted") for o in orders
    )
    assert nothing_arrives(pubsub)


def test_a_multi_table_child_publishes_its_parent_on_save_and_on_delete(
    pubsub: PubSub,
) -> None:
    pubsub.listen("testapp.place", "testapp.restaurant")
    restaurant = Restaurant.objects.create(name="Luigi's", serves_pizza=True)
    restaurant.name = "Mario's"
    restaurant.save()
    pk = restaurant.pk
    restaurant.delete()
    events = collect(pubsub, 3)
    assert {e.channel for e in events} == {"testapp.place"}  # the child is not published
    assert [e.data for e in events] == [
        {"event": event, "model": "testapp.place", "pk": pk, "fields": {"name": name}}
        for event, name in (("created", "Luigi's"), ("updated", "Mario's"), ("deleted", "Mario's"))
    ]
    assert nothing_arrives(pubsub)


def test_children_defined_before_the_parent_is_published_publish_it_too(
    pubsub: PubSub,
) -> None:
    unpublish_on_save(Place)
    try:
        pubsub.listen("places")
        restaurant = Restaurant.objects.create(name="unpublished")
        assert nothing_arrives(pubsub)
        publish_on_save(Place, channel="places", fields=("name",), events=("updated",))
        restaurant.save()
        [event] = collect(pubsub, 1)
        assert event.data["event"] == "updated"
        assert event.data["pk"] == restaurant.pk
    finally:
        unpublish_on_save(Place)
        publish_on_save(Place, fields=("name",))


def test_a_deferred_child_deletes_without_reading_deferred_parent_fields(
    pubsub: PubSub,
) -> None:
    pk = Restaurant.objects.create(name="Chez", serves_pizza=False).pk
    pubsub.listen("testapp.place")
    restaurant = Restaurant.objects.only("serves_pizza").get(pk=pk)
    restaurant.serves_pizza = True
    restaurant.save()
    restaurant.delete()
    updated, deleted = collect(pubsub, 2)
    assert updated.data == {
        "event": "updated",
        "model": "testapp.place",
        "pk": pk,
        "fields": {},
        "deferred": ["name"],
    }
    assert deleted.data["event"] == "deleted"
    assert not Place.objects.filter(pk=pk).exists()


@pytest.mark.django_db(transaction=True, databases=["default", "lite"])
def test_writes_to_a_database_without_notify_succeed_and_warn_once(
    pubsub: PubSub, caplog: pytest.LogCaptureFixture
) -> None:
    pubsub.listen("testapp.order", "shipments")
    with caplog.at_level(logging.WARNING, "django_pgpubsub"):
        order = Order.objects.using("lite").create(status="lite")
        order.status = "still lite"
        order.save(using="lite")
        Shipment.objects.using("lite").create(code="S", order=order)
        order.delete(using="lite")  # cascades to the shipment
    assert not Order.objects.using("lite").exists()
    assert not Shipment.objects.using("lite").exists()
    assert nothing_arrives(pubsub)
    warnings = [r.getMessage() for r in caplog.records if "not published" in r.getMessage()]
    assert warnings == [
        "testapp.order events on database 'lite' are not published: it is sqlite, which has "
        "no NOTIFY (logged once per model and database).",
        "testapp.shipment events on database 'lite' are not published: it is sqlite, which "
        "has no NOTIFY (logged once per model and database).",
    ]
    Order.objects.create(status="default")
    assert collect(pubsub, 1)[0].data["fields"]["status"] == "default"


class StaffGroup(Group):
    """A proxy of a model published in the test below (in auth, so that
    ``makemigrations testapp`` never sees it)."""

    class Meta:
        proxy = True
        app_label = "auth"


def test_saves_and_deletes_through_a_proxy_model_are_not_published(pubsub: PubSub) -> None:
    publish_on_save(Group, fields=("name",))
    try:
        pubsub.listen("auth.group")
        proxied = StaffGroup.objects.create(name="through the proxy")
        proxied.name = "renamed"
        proxied.save()
        proxied.delete()
        assert nothing_arrives(pubsub)
        Group.objects.create(name="direct")
        [event] = collect(pubsub, 1)
        assert (event.data["event"], event.data["fields"]) == ("created", {"name": "direct"})
    finally:
        unpublish_on_save(Group)
