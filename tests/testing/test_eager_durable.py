"""eager() inside plain django.test.TestCase: durable events, publish_on_save and
publish_changes (statement triggers), and eager() outside any transaction."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase

from django_pgpubsub import DurableEvent, Event, Registry, notify, notify_many
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.testing import eager
from tests.testapp.models import DurableItem, Item, Order, Received, Tracked


def recording(*channels: str) -> tuple[Registry, list[Event]]:
    seen: list[Event] = []
    handlers = Registry()
    handlers.register(seen.append, *channels)
    return handlers, seen


class Durable(TestCase):
    def test_a_durable_event_has_its_outbox_row(self) -> None:
        ids: list[tuple[int, int, bool]] = []

        def check(event: DurableEvent) -> None:
            ids.append((event.id, event.attempt, OutboxEvent.objects.filter(id=event.id).exists()))

        handlers = Registry()
        handlers.register(check, "d")  # type: ignore[arg-type]
        with eager(handlers), self.captureOnCommitCallbacks(execute=True):
            notify("d", {"n": 1}, durable=True)
            notify_many([("d", "2"), ("d", "3")], durable=True)
            row_ids = list(OutboxEvent.objects.order_by("id").values_list("id", flat=True))
            assert ids == []
        assert ids == [(row_id, 1, True) for row_id in row_ids]
        assert not OutboxEvent.objects.exists()  # completed: deleted, as by a listener

    def test_a_failing_event_is_retried_then_left_failed(self) -> None:
        attempts: list[tuple[int, int]] = []

        def broken(event: DurableEvent) -> None:
            attempts.append((event.id, event.attempt))
            Received.objects.create(channel="d", payload="undone", handler="broken", pid=0)
            raise RuntimeError(f"attempt {event.attempt}")

        handlers = Registry()
        handlers.register(broken, "d")  # type: ignore[arg-type]
        with (
            eager(handlers) as published,
            pytest.raises(RuntimeError, match="attempt 3"),
            self.captureOnCommitCallbacks(execute=True),
        ):
            notify("d", "x", durable=True)
        row = OutboxEvent.objects.get()
        assert attempts == [(row.id, 1), (row.id, 2), (row.id, 3)]  # DURABLE_MAX_ATTEMPTS
        assert (row.state, row.attempts) == ("failed", 3)
        assert "RuntimeError: attempt 3" in row.last_error
        assert not Received.objects.exists()
        assert [str(error) for error in published.errors] == ["attempt 3"]

    def test_a_retry_that_succeeds_raises_nothing(self) -> None:
        attempts: list[int] = []

        def flaky(event: DurableEvent) -> None:
            attempts.append(event.attempt)
            if event.attempt == 1:
                raise RuntimeError("first")

        handlers = Registry()
        handlers.register(flaky, "d")  # type: ignore[arg-type]
        with eager(handlers) as published, self.captureOnCommitCallbacks(execute=True):
            notify("d", "x", durable=True)
        assert attempts == [1, 2]
        assert not OutboxEvent.objects.exists()
        assert published.errors == []

    def test_idempotency_keys_as_in_production(self) -> None:
        handlers, seen = recording("d")
        with eager(handlers), self.captureOnCommitCallbacks(execute=True):
            assert notify("d", "1", durable=True, key="k") is True
            assert notify("d", "2", durable=True, key="k") is False  # waiting: not stored
            assert notify_many([("d", "3", "k"), ("d", "4", "j")], durable=True) == 1
        assert [e.payload for e in seen] == ["1", "4"]
        with eager(handlers), self.captureOnCommitCallbacks(execute=True):
            assert notify("d", "5", durable=True, key="k") is True  # handled: free again
        assert [e.payload for e in seen] == ["1", "4", "5"]

    def test_no_handler_leaves_the_event_pending(self) -> None:
        with eager(Registry()) as published, self.captureOnCommitCallbacks(execute=True):
            notify("nobody", "x", durable=True)
        row = OutboxEvent.objects.get()
        assert (row.state, row.attempts) == ("pending", 0)
        assert published == [DurableEvent("nobody", "x", row.sender_pid, row.id, 0)]


class SavedModels(TestCase):
    def test_publish_on_save_reaches_the_handlers(self) -> None:
        with eager() as published, self.captureOnCommitCallbacks(execute=True):
            order = Order.objects.create(status="new")
            order.status = "paid"
            order.save()
        published.assert_published("testapp.order", event="created", pk=order.pk)
        published.assert_published("testapp.order", event="updated", pk=order.pk)
        assert list(Received.objects.values_list("handler", flat=True)) == [
            "order created",
            "order updated",
        ]


class StatementTriggers(TestCase):
    def test_bulk_writes_and_raw_sql_reach_the_handlers(self) -> None:
        handlers, seen = recording("testapp.item", "tracked")
        with eager(handlers), self.captureOnCommitCallbacks(execute=True):
            items = Item.objects.bulk_create([Item(name="a"), Item(name="b")])
            Item.objects.update(quantity=2)
            with connection.cursor() as cursor:
                cursor.execute("UPDATE testapp_item SET name = 'raw' WHERE id = %s", [items[0].pk])
            Item.objects.filter(pk=items[1].pk).delete()
            tracked = Tracked.objects.create()
            Tracked.objects.update(note="unchanged status: not published")
            Tracked.objects.update(status="shipped")
            assert seen == []
        pks = [item.pk for item in items]
        assert [(e.channel, e.data["event"], e.data["pks"]) for e in seen] == [
            ("testapp.item", "created", pks),
            ("testapp.item", "updated", pks),
            ("testapp.item", "updated", pks[:1]),
            ("testapp.item", "deleted", pks[1:]),
            ("tracked", "updated", [tracked.pk]),
        ]

    def test_a_rolled_back_savepoint_takes_its_trigger_events(self) -> None:
        handlers, seen = recording("testapp.item")
        with eager(handlers), self.captureOnCommitCallbacks(execute=True):
            Item.objects.create(name="kept")
            with pytest.raises(ZeroDivisionError), transaction.atomic():
                Item.objects.create(name="rolled back")
                1 / 0  # noqa: B018
        assert [e.data["count"] for e in seen] == [1]

    def test_a_durable_trigger_event_has_its_outbox_row(self) -> None:
        handlers, seen = recording("test.changes.durable")
        with eager(handlers), self.captureOnCommitCallbacks(execute=True):
            item = DurableItem.objects.create(name="d")
            row_id = OutboxEvent.objects.get().id
        assert seen == [
            DurableEvent("test.changes.durable", seen[0].payload, seen[0].pid, row_id, 1)
        ]
        assert seen[0].data["pks"] == [item.pk]
        assert not OutboxEvent.objects.exists()

    def test_outside_eager_the_triggers_write_nothing_aside(self) -> None:
        with eager(Registry()):
            pass
        Item.objects.create(name="plain")
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_temp.pgpubsub_eager")
            assert cursor.fetchone() == (0,)


class Autocommit(TransactionTestCase):
    def test_handlers_run_as_each_transaction_commits(self) -> None:
        handlers, seen = recording("a", "testapp.item", "d")
        with eager(handlers) as published:
            notify("a", "at once")
            assert [e.payload for e in seen] == ["at once"]
            with transaction.atomic():
                Item.objects.create(name="x")
                notify("d", "durable", durable=True)
                assert len(seen) == 1
            assert [e.channel for e in seen] == ["a", "testapp.item", "d"]
            with pytest.raises(ZeroDivisionError), transaction.atomic():
                notify("a", "rolled back")
                1 / 0  # noqa: B018
        assert published == seen
        assert not OutboxEvent.objects.exists()
