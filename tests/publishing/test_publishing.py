"""publish_on_save against a real PostgreSQL."""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import models, transaction
from django.test import Client

from django_pgpubsub import (
    InvalidChannel,
    PubSub,
    connect,
    notify_many,
    publish_on_save,
    unpublish_on_save,
)
from tests.helpers import ManagePy, collect, nothing_arrives, wait_until
from tests.testapp.models import Order, Received, Shipment

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_created_updated_deleted_payloads(pubsub: PubSub) -> None:
    pubsub.listen("testapp.order")
    user = User.objects.create(username="ada")
    token = uuid.UUID("00000000-0000-0000-0000-00000000000a")
    placed = datetime.datetime(2026, 11, 26, 12, 30, tzinfo=datetime.timezone.utc)
    order = Order.objects.create(
        total=Decimal("12.50"), placed_at=placed, token=token, customer=user, attachment="a/b.pdf"
    )
    order.status = "paid"
    order.save()
    pk = order.pk
    order.delete()
    created, updated, deleted = (e.data for e in collect(pubsub, 3))
    assert created == {
        "event": "created",
        "model": "testapp.order",
        "pk": pk,
        "fields": {
            "status": "new",
            "total": "12.50",
            "placed_at": "2026-11-26T12:30:00Z",
            "token": str(token),
            "customer": user.pk,
            "attachment": "a/b.pdf",
            "notes": "",
        },
    }
    assert updated["event"] == "updated"
    assert updated["fields"]["status"] == "paid"
    assert deleted["event"] == "deleted"
    assert deleted["pk"] == pk


def test_options_channel_fields_events_and_uuid_pk(pubsub: PubSub) -> None:
    pubsub.listen("shipments")
    order = Order.objects.create()
    shipment = Shipment.objects.create(code="S-1", order=order)
    shipment.code = "S-2"
    shipment.save()  # "updated" is not among its events
    pk = str(shipment.pk)
    shipment.delete()
    created, deleted = (e.data for e in collect(pubsub, 2))
    assert created == {
        "event": "created",
        "model": "testapp.shipment",
        "pk": pk,
        "fields": {"code": "S-1"},
    }
    assert (deleted["event"], deleted["pk"]) == ("deleted", pk)
    assert nothing_arrives(pubsub)


def test_a_model_the_project_does_not_own(pubsub: PubSub) -> None:
    pubsub.listen("auth.user")
    user = User.objects.create(username="grace", email="g@example.com")
    [event] = collect(pubsub, 1)
    assert event.data["fields"] == {"username": "grace", "email": "g@example.com"}
    assert event.data["pk"] == user.pk


def test_rolled_back_save_publishes_nothing_committed_one_exactly_one(pubsub: PubSub) -> None:
    pubsub.listen("testapp.order")
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        Order.objects.create(status="doomed")
        1 / 0  # noqa: B018
    assert nothing_arrives(pubsub)
    with transaction.atomic():
        Order.objects.create(status="kept")
        assert nothing_arrives(pubsub)
    [event] = collect(pubsub, 1)
    assert event.data["fields"]["status"] == "kept"
    assert nothing_arrives(pubsub)


def test_published_on_the_writes_own_database() -> None:
    with connect("other") as other, connect() as default:
        other.listen("testapp.order")
        default.listen("testapp.order")
        Order.objects.using("other").create(status="elsewhere")
        [event] = collect(other, 1)
        assert event.data["fields"]["status"] == "elsewhere"
        assert nothing_arrives(default)


def test_fixture_loading_publishes_nothing(pubsub: PubSub, tmp_path: Path) -> None:
    pubsub.listen("testapp.order")
    fixture = tmp_path / "orders.json"
    fixture.write_text(
        json.dumps([{"model": "testapp.order", "pk": 7, "fields": {"status": "loaded"}}])
    )
    call_command("loaddata", str(fixture), verbosity=0)
    assert Order.objects.get(pk=7).status == "loaded"
    assert nothing_arrives(pubsub)


def test_too_large_payload_never_fails_the_write(
    pubsub: PubSub, caplog: pytest.LogCaptureFixture
) -> None:
    pubsub.listen("testapp.order")
    caplog.set_level(logging.WARNING, "django_pgpubsub")
    first = Order.objects.create(notes="x" * 9000)
    second = Order.objects.create(notes="ü" * 5000)
    events = collect(pubsub, 2)
    assert [e.data for e in events] == [
        {"event": "created", "model": "testapp.order", "pk": pk, "fields": None, "truncated": True}
        for pk in (first.pk, second.pk)
    ]
    assert Order.objects.count() == 2
    warnings = [r for r in caplog.records if "sent without fields" in r.getMessage()]
    assert len(warnings) == 1


def test_bulk_operations_fire_no_signals_use_notify_many(pubsub: PubSub) -> None:
    pubsub.listen("testapp.order")
    with transaction.atomic():
        orders = Order.objects.bulk_create([Order(status="bulk") for _ in range(3)])
        Order.objects.filter(status="bulk").update(status="bulk2")
        assert nothing_arrives(pubsub)
        # The README's recipe for publishing what bulk operations change:
        notify_many(
            ("testapp.order", {"event": "updated", "model": "testapp.order", "pk": o.pk})
            for o in orders
        )
    assert [e.data["pk"] for e in collect(pubsub, 3)] == [o.pk for o in orders]


def test_view_with_atomic_requests(pubsub: PubSub) -> None:
    pubsub.listen("testapp.order")
    client = Client(raise_request_exception=False)
    response = client.post("/orders/", {"status": "web"})
    assert response.status_code == 201
    [event] = collect(pubsub, 1)
    assert event.data["pk"] == int(response.content)
    assert event.data["fields"]["status"] == "web"

    response = client.post("/orders/?fail=1", {"status": "rolled back"})
    assert response.status_code == 500
    assert nothing_arrives(pubsub)
    assert not Order.objects.filter(status="rolled back").exists()


@pytest.mark.slow
def test_listen_events_handler_receives_model_events(
    listen_events: Callable[..., ManagePy],
) -> None:
    listen_events("--channel", "testapp.order")
    order = Order.objects.create()
    order.delete()
    wait_until(lambda: Received.objects.count() == 2)
    assert list(Received.objects.order_by("id").values_list("handler", flat=True)) == [
        "order created",
        "order deleted",
    ]


class Unpublished(models.Model):
    name = models.CharField(max_length=10)

    class Meta:
        app_label = "testapp"
        managed = False

    def __str__(self) -> str:
        return self.name


def test_registering_a_model_twice_is_an_error() -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"already published on channel 'testapp\.order'"
    ):
        publish_on_save(Order)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fields": ("nope",)}, ImproperlyConfigured, "has no field 'nope'"),
        ({"fields": "name"}, ImproperlyConfigured, "not a str"),
        ({"events": ("saved",)}, ImproperlyConfigured, "takes some of"),
        ({"events": ()}, ImproperlyConfigured, "takes some of"),
        ({"channel": "x" * 64}, InvalidChannel, "64 bytes"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        publish_on_save(Unpublished, **kwargs)  # type: ignore[call-overload]


def test_not_a_model() -> None:
    with pytest.raises(ImproperlyConfigured, match="takes a model class"):
        publish_on_save(dict)  # type: ignore[type-var]


def test_unpublish_on_save(pubsub: PubSub) -> None:
    publish_on_save(Unpublished, channel="unpublished")
    unpublish_on_save(Unpublished)
    publish_on_save(Unpublished, channel="unpublished")  # allowed again after unpublishing
    unpublish_on_save(Unpublished)
    pubsub.listen("unpublished")
    from django.db.models.signals import post_save

    post_save.send(Unpublished, instance=Unpublished(name="x"), created=True, using="default")
    assert nothing_arrives(pubsub)
