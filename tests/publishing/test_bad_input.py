"""Bad input gets the documented errors, before any SQL reaches PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from django_pgpubsub import (
    DurableEvent,
    Event,
    InvalidChannel,
    InvalidPayload,
    PubSub,
    connect,
    notify,
    notify_many,
)
from django_pgpubsub.db.sql import WAKEUP_CHANNEL
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.ops.health import check_health
from django_pgpubsub.testing import capture_events
from django_pgpubsub.vocabulary.channel_names import validate_channel
from django_pgpubsub.vocabulary.payload import encode_payload
from tests.helpers import collect

NOT_STR: list[Any] = [["a"], ("a",), {"a"}, {"a": 1}, b"a", 1, 1.5, None, True, object()]


@pytest.mark.parametrize("channel", NOT_STR, ids=repr)
def test_every_non_str_channel_is_invalid_channel(channel: Any) -> None:
    with pytest.raises(InvalidChannel, match="Channel names are str, not"):
        validate_channel(channel)
    # The same error a second time: nothing is remembered between calls.
    with pytest.raises(InvalidChannel, match="Channel names are str, not"):
        validate_channel(channel)


@pytest.mark.parametrize("channel", ["a\ud800", "\udfff", "ok\udc80ok"])
def test_lone_surrogates_in_a_channel_are_invalid_channel(channel: str) -> None:
    with pytest.raises(InvalidChannel, match="cannot be encoded in UTF-8"):
        validate_channel(channel)


@pytest.mark.parametrize(
    "payload",
    ["a\ud800", "\udfff" + "x" * 3000, {"key": "b\udc80"}, ["\ud800"]],
    ids=["short", "long", "dict", "list"],
)
def test_lone_surrogates_in_a_payload_are_invalid_payload(payload: Any) -> None:
    with pytest.raises(InvalidPayload, match="cannot be encoded in UTF-8"):
        encode_payload(payload)
    with pytest.raises(InvalidPayload, match="cannot be encoded in UTF-8"):
        encode_payload(payload, limit_size=False)


@pytest.mark.django_db(transaction=True)
def test_surrogates_are_refused_before_sql_and_the_transaction_stays_usable(
    pubsub: PubSub,
) -> None:
    pubsub.listen("surrogates")
    default = connections["default"]
    with transaction.atomic(), CaptureQueriesContext(default) as queries:
        with pytest.raises(InvalidChannel):
            notify("a\ud800", "x")
        with pytest.raises(InvalidPayload):
            notify("surrogates", "a\ud800")
        with pytest.raises(InvalidPayload):
            notify("surrogates", {"k": "\ud800"}, durable=True)
        with pytest.raises(InvalidPayload):
            notify_many([("surrogates", "fine"), ("surrogates", "\ud800")])
        with pytest.raises(InvalidChannel):
            pubsub.listen("\ud800")
        with pytest.raises(InvalidChannel):
            pubsub.notify("\ud800")
        assert queries.captured_queries == []
        notify("surrogates", "still usable é")
    assert collect(pubsub, 1)[0].payload == "still usable é"


@pytest.mark.parametrize("channels", ["orders", b"orders"], ids=repr)
def test_a_str_where_a_list_of_channels_is_expected_is_an_error(channels: Any) -> None:
    with pytest.raises(InvalidChannel, match=r"not the string .*orders.*; write \["):
        Listener(channels)


@pytest.mark.django_db(transaction=True)
def test_outbox_maintenance_refuses_a_str_for_channels() -> None:
    with pytest.raises(InvalidChannel, match="not the string 'orders'"):
        OutboxEvent.objects.for_channels("orders")
    assert OutboxEvent.objects.for_channels(["orders"]).retry() == 0


def test_check_health_refuses_a_str_for_channels() -> None:
    with pytest.raises(InvalidChannel, match="not the string 'orders'"):
        check_health(require_listener=True, channels="orders")


def test_listener_takes_any_iterable_of_channels() -> None:
    assert Listener(iter(["b", "a"]), durable=False).channels == frozenset({"a", "b"})


def test_event_and_durable_event_equality_agrees_with_hashing() -> None:
    plain = Event("c", "p", 7)
    durable = DurableEvent("c", "p", 7, id=1, attempt=1)
    assert plain != durable
    assert durable != plain
    assert len({plain, durable}) == 2
    twin = DurableEvent("c", "p", 9, id=1, attempt=1)  # pid is not part of a durable's identity
    assert durable == twin
    assert hash(durable) == hash(twin)
    assert durable != DurableEvent("c", "p", 7, id=1, attempt=2)
    assert plain == Event("c", "p", 7)
    assert hash(plain) == hash(Event("c", "p", 7))
    pairs = [plain, durable, twin, Event("c", "p", 7), DurableEvent("c", "q", 7, 1, 1)]
    for a in pairs:
        for b in pairs:
            if a == b:
                assert hash(a) == hash(b), (a, b)


@pytest.mark.django_db(transaction=True, databases=["default", "lite"])
def test_notify_on_a_non_postgresql_alias_is_improperly_configured_before_sql() -> None:
    lite = connections["lite"]
    with CaptureQueriesContext(lite) as queries:
        for send in (
            lambda: notify("c", "x", using="lite"),
            lambda: notify_many([("c", "x")], using="lite"),
        ):
            with pytest.raises(ImproperlyConfigured, match=r"DATABASES\['lite'\] uses sqlite"):
                send()
    assert queries.captured_queries == []


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_durable_on_another_alias_than_the_outbox_is_a_clear_error() -> None:
    other = connections["other"]
    with CaptureQueriesContext(other) as queries:
        with pytest.raises(ImproperlyConfigured, match=r"outbox of PGPUBSUB\['DATABASE'\]"):
            notify("jobs", "x", durable=True, using="other")
        with pytest.raises(ImproperlyConfigured, match="Leave using= out"):
            notify_many([("jobs", "x")], durable=True, using="other")
    assert queries.captured_queries == []
    # Naming the outbox's own alias works.
    with capture_events(WAKEUP_CHANNEL) as woken:
        notify("jobs", "x", durable=True, using="default")
    assert [e.payload for e in woken] == ["jobs"]


@pytest.mark.django_db(transaction=True)
def test_pubsub_listen_refuses_what_the_listener_refuses() -> None:
    with connect() as ps, pytest.raises(InvalidChannel, match="Channel names are str"):
        ps.listen(["a", "b"])  # type: ignore[arg-type]
