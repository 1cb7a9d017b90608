"""notify() and notify_many() on Django's connections, in the caller's transaction."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import close_old_connections, connection, transaction

from django_pgpubsub import (
    InvalidChannel,
    InvalidPayload,
    PayloadTooLarge,
    PubSub,
    PubSubError,
    connect,
    notify,
    notify_many,
)
from django_pgpubsub.db.connection import execute_in_transaction
from django_pgpubsub.db.sql import NOTIFY_MANY_SQL, NOTIFY_SQL
from tests.helpers import collect, database_url, nothing_arrives, run_sql, wait_until

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_delivered_at_commit_not_before(pubsub: PubSub) -> None:
    pubsub.listen("orders")
    with transaction.atomic():
        notify("orders", "first")
        assert nothing_arrives(pubsub)
    [event] = collect(pubsub, 1)
    assert (event.channel, event.payload) == ("orders", "first")
    assert event.pid == connection.connection.info.backend_pid


def test_nothing_after_rollback(pubsub: PubSub) -> None:
    pubsub.listen("orders")
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        notify("orders", "never")
        1 / 0  # noqa: B018
    assert nothing_arrives(pubsub)


def test_rolled_back_savepoint_drops_only_its_own(pubsub: PubSub) -> None:
    pubsub.listen("orders")
    with transaction.atomic():
        notify("orders", "kept")
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            notify("orders", "dropped")
            1 / 0  # noqa: B018
        notify("orders", "kept too")
    events = collect(pubsub, 2)
    assert [e.payload for e in events] == ["kept", "kept too"]
    assert nothing_arrives(pubsub)


def test_identical_pairs_of_one_transaction_are_delivered_once(pubsub: PubSub) -> None:
    pubsub.listen("fold", "other")
    with transaction.atomic():
        notify("fold", "same")
        notify("other", "same")  # another channel: not identical
        notify("fold", "same")
        notify_many([("fold", "same"), ("fold", "different")])
    assert [(e.channel, e.payload) for e in collect(pubsub, 3)] == [
        ("fold", "same"),
        ("other", "same"),
        ("fold", "different"),
    ]
    notify("fold", "same")  # another transaction: delivered again
    assert [e.payload for e in collect(pubsub, 1)] == ["same"]
    assert nothing_arrives(pubsub)


def test_outside_a_transaction_it_is_sent_at_once(pubsub: PubSub) -> None:
    pubsub.listen("orders")
    notify("orders")
    [event] = collect(pubsub, 1)
    assert event.payload == ""


def test_using_a_second_alias_joins_that_alias_transaction() -> None:
    with connect("other") as listener:
        listener.listen("audit")
        with transaction.atomic(using="other"):
            notify("audit", "via other", using="other")
            assert nothing_arrives(listener)
        [event] = collect(listener, 1)
    assert event.payload == "via other"


def test_default_alias_does_not_reach_other_database() -> None:
    # NOTIFY is per database: the second alias's listener must not see it.
    with connect("other") as listener:
        listener.listen("audit")
        notify("audit", "default db")
        assert nothing_arrives(listener)


def test_str_is_sent_unchanged(pubsub: PubSub) -> None:
    pubsub.listen("raw")
    text = ' {"not": "re-encoded"} ünïcødé ✓ '
    notify("raw", text)
    [event] = collect(pubsub, 1)
    assert event.payload == text


def test_other_values_are_compact_json(pubsub: PubSub) -> None:
    pubsub.listen("json")
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    notify("json", {"a": [1, 2], "price": decimal.Decimal("9.90"), "at": moment})
    notify("json", [ident, "é"])
    first, second = collect(pubsub, 2)
    assert first.payload == '{"a":[1,2],"price":"9.90","at":"2026-01-02T03:04:05Z"}'
    assert first.data["price"] == "9.90"
    assert second.payload == '["12345678-1234-5678-1234-567812345678","é"]'


def test_unserialisable_payload_is_refused_before_sql() -> None:
    with pytest.raises(InvalidPayload, match="not JSON serialisable"):
        notify("json", {"set": {1, 2}})


def test_notify_many_delivers_ten_thousand_in_order(pubsub: PubSub) -> None:
    pubsub.listen("bulk", "bulk2")
    items = [("bulk" if i % 3 else "bulk2", {"i": i}) for i in range(10_000)]
    with transaction.atomic():
        assert notify_many(items) == 10_000
    events = collect(pubsub, 10_000, timeout=30)
    assert [(e.channel, e.data["i"]) for e in events] == [(c, p["i"]) for c, p in items]


def test_notify_many_of_nothing_sends_nothing(pubsub: PubSub) -> None:
    pubsub.listen("bulk")
    assert notify_many([]) == 0
    assert nothing_arrives(pubsub)


def test_notify_many_with_one_bad_item_sends_nothing(pubsub: PubSub) -> None:
    pubsub.listen("bulk")
    items = [("bulk", "1"), ("bulk", "2"), ("", "bad channel"), ("bulk", "4")]
    with pytest.raises(InvalidChannel):
        notify_many(items)
    with pytest.raises(PayloadTooLarge):
        notify_many([("bulk", "ok"), ("bulk", "x" * 8000)])
    assert nothing_arrives(pubsub)


def test_notify_many_on_second_alias() -> None:
    with connect("other") as listener:
        listener.listen("bulk")
        notify_many([("bulk", "a"), ("bulk", "b")], using="other")
        assert [e.payload for e in collect(listener, 2)] == ["a", "b"]


@pytest.mark.parametrize(
    "channel",
    [
        b"bytes",
        None,
        42,
        "",
        "nul\x00byte",
        "x" * 64,
        "é" * 32,  # 64 bytes made of 2-byte characters
    ],
)
def test_bad_channel_raises_before_sql_and_transaction_stays_usable(
    channel: object,
) -> None:
    with transaction.atomic():
        with pytest.raises(InvalidChannel) as info:
            notify(channel, "x")  # type: ignore[call-overload]
        assert User.objects.count() == 0  # would fail in an aborted transaction
    assert isinstance(info.value, PubSubError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("payload", "size"),
    [("x" * 8000, 8000), ("€" * 2700, 8100), ("x" * 7998 + "é", 8000)],
)
def test_oversized_payload_raises_before_sql(payload: str, size: int) -> None:
    assert len(payload.encode()) == size
    with transaction.atomic():
        with pytest.raises(PayloadTooLarge) as info:
            notify("big", payload)
        assert User.objects.count() == 0
    assert isinstance(info.value, PubSubError)
    assert isinstance(info.value, ValueError)
    assert str(size) in str(info.value)


def test_nul_in_payload_raises_before_sql() -> None:
    with transaction.atomic():
        with pytest.raises(InvalidPayload, match="NUL"):
            notify("x", "a\x00b")
        assert User.objects.count() == 0


def test_largest_payload_arrives_intact(pubsub: PubSub) -> None:
    pubsub.listen("big")
    ascii_payload = "a" * 7998 + "z"
    multibyte = "€" * 2666 + "z"  # 7999 bytes, 2667 characters
    assert len(multibyte.encode()) == 7999
    notify("big", ascii_payload)
    notify("big", multibyte)
    first, second = collect(pubsub, 2)
    assert first.payload == ascii_payload
    assert second.payload == multibyte


def test_63_byte_channel_works_end_to_end(pubsub: PubSub) -> None:
    longest = "é" * 31 + "x"  # 63 bytes
    pubsub.listen(longest)
    notify(longest, "edge")
    [event] = collect(pubsub, 1)
    assert event.channel == longest


HOSTILE = [
    'x"; DROP TABLE auth_user; --',
    "Robert'); DROP TABLE students;--",
    "semi;colon",
    'quote"inside',
    "white space",
]


@pytest.mark.parametrize("channel", HOSTILE)
def test_channel_names_are_data_never_sql(pubsub: PubSub, channel: str) -> None:
    User.objects.create(username="still-here")
    pubsub.listen(channel)
    notify(channel, "hello")
    pubsub.notify(channel, "from pubsub")
    events = collect(pubsub, 2)
    assert [(e.channel, e.payload) for e in events] == [
        (channel, "hello"),
        (channel, "from pubsub"),
    ]
    pubsub.unlisten(channel)
    notify(channel, "after unlisten")
    assert nothing_arrives(pubsub)
    assert User.objects.filter(username="still-here").exists()


def test_case_matters_orders_and_orders_are_two_channels(pubsub: PubSub) -> None:
    pubsub.listen("orders")
    notify("Orders", "upper")
    notify("orders", "lower")
    [event] = collect(pubsub, 1)
    assert (event.channel, event.payload) == ("orders", "lower")
    assert nothing_arrives(pubsub)


def test_non_latin_channel(pubsub: PubSub) -> None:
    pubsub.listen("заказы.新")
    notify("заказы.新", {"ok": True})
    [event] = collect(pubsub, 1)
    assert event.channel == "заказы.新"
    assert event.data == {"ok": True}


def test_json_encoding_matches_json_module(pubsub: PubSub) -> None:
    pubsub.listen("json")
    value = {"nested": {"list": [1, 2.5, None, True]}, "text": "ü"}
    notify("json", value)
    [event] = collect(pubsub, 1)
    assert json.loads(event.payload) == value


def test_in_async_code_it_refuses_like_django_does() -> None:
    import asyncio

    from django.core.exceptions import SynchronousOnlyOperation

    async def from_a_coroutine() -> None:
        notify("orders", "blocking call in an event loop")

    with pytest.raises(SynchronousOnlyOperation):
        asyncio.run(from_a_coroutine())


def test_debug_query_logging_sees_the_statement(pubsub: PubSub) -> None:
    from django.test.utils import CaptureQueriesContext

    pubsub.listen("orders")
    with CaptureQueriesContext(connection) as queries:
        notify("orders", "logged")
        notify_many([("orders", "logged too")])
    assert "pg_notify" in queries.captured_queries[0]["sql"]
    assert "unnest" in queries.captured_queries[1]["sql"]
    assert [e.payload for e in collect(pubsub, 2)] == ["logged", "logged too"]


def test_debug_setting_logs_the_statement(pubsub: PubSub) -> None:
    from django.db import reset_queries
    from django.test import override_settings

    pubsub.listen("orders")
    notify("orders", "before")
    with override_settings(DEBUG=True):
        reset_queries()
        notify("orders", "while debugging")
        assert "pg_notify" in connection.queries[-1]["sql"]
    reset_queries()
    notify("orders", "after")
    assert connection.queries == []
    assert len(collect(pubsub, 3)) == 3


def test_a_broken_transaction_is_refused_like_django_does() -> None:
    from django.db import DatabaseError
    from django.db.transaction import TransactionManagementError

    with transaction.atomic():
        with (
            pytest.raises(DatabaseError),
            transaction.atomic(savepoint=False),
            connection.cursor() as cursor,
        ):
            cursor.execute("SELECT no_such_column FROM auth_user")
        with pytest.raises(TransactionManagementError):
            notify("orders", "in a broken transaction")
        transaction.set_rollback(True)


def test_driver_errors_become_djangos(pubsub: PubSub) -> None:
    from django.db import ProgrammingError

    pubsub.listen("orders")
    with transaction.atomic():
        with connection.cursor() as cursor:
            # All undone by the rollback below.
            cursor.execute("CREATE ROLE pgpubsub_cannot_notify")
            cursor.execute("REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC")
            cursor.execute("SET LOCAL ROLE pgpubsub_cannot_notify")
        with pytest.raises(ProgrammingError, match="permission denied") as info:
            notify("orders", "refused by the server")
        assert type(info.value.__cause__).__module__.startswith("psycopg")
        assert connection.errors_occurred
        transaction.set_rollback(True)
    notify("orders", "the connection still works")
    assert collect(pubsub, 1)[0].payload == "the connection still works"


def test_survives_django_closing_its_connection(pubsub: PubSub) -> None:
    pubsub.listen("orders")
    notify("orders", "before")
    connection.close()
    notify("orders", "after")
    assert [e.payload for e in collect(pubsub, 2)] == ["before", "after"]


def test_an_execute_wrapper_sees_the_statement(pubsub: PubSub) -> None:
    """The fallback: with an execute_wrapper() installed, Django's own cursor runs it."""
    seen: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    pubsub.listen("orders")
    with connection.execute_wrapper(wrapper):
        notify("orders", "wrapped")
        notify_many([("orders", "wrapped too")])
    notify("orders", "not wrapped")
    assert seen == [NOTIFY_SQL, NOTIFY_MANY_SQL]
    assert [e.payload for e in collect(pubsub, 3)] == ["wrapped", "wrapped too", "not wrapped"]


def test_a_failed_health_check_reconnects_before_sending(pubsub: PubSub) -> None:
    """The fast path: with CONN_HEALTH_CHECKS, a persistent connection the
    server dropped between two requests is replaced, as Django's cursor does."""
    saved = {key: connection.settings_dict[key] for key in ("CONN_HEALTH_CHECKS", "CONN_MAX_AGE")}
    connection.settings_dict.update(CONN_HEALTH_CHECKS=True, CONN_MAX_AGE=None)
    pubsub.listen("orders")
    try:
        connection.close()
        notify("orders", "first request")
        old_pid = connection.connection.info.backend_pid
        close_old_connections()  # what Django does when a request starts
        url = database_url(connection.settings_dict)
        run_sql(url, "SELECT pg_terminate_backend(%s)", (old_pid,))

        def gone() -> bool:
            return run_sql(url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (old_pid,)) == []

        wait_until(gone, 10, "the backend to exit")
        notify("orders", "second request")
        assert connection.connection.info.backend_pid != old_pid
    finally:
        connection.close()
        connection.settings_dict.update(saved)
    assert [e.payload for e in collect(pubsub, 2)] == ["first request", "second request"]


@pytest.mark.parametrize("wrapped", [False, True], ids=["fast path", "fallback"])
def test_both_paths_run_the_statement_in_the_callers_transaction(wrapped: bool) -> None:
    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        return execute(sql, params, many, context)

    sql = "INSERT INTO auth_group (name) VALUES (%s)"
    with transaction.atomic():
        with connection.execute_wrapper(wrapper) if wrapped else contextlib.nullcontext():
            execute_in_transaction(None, sql, ("rolled back",))
        assert Group.objects.filter(name="rolled back").exists()
        transaction.set_rollback(True)
    assert not Group.objects.exists()
    execute_in_transaction("default", sql, ("committed",))
    assert list(Group.objects.values_list("name", flat=True)) == ["committed"]
