"""eager() inside plain django.test.TestCase: plain events, order, atomics, errors."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.test import TestCase

from django_pgpubsub import Event, Registry, anotify, notify, notify_many
from django_pgpubsub.testing import eager
from tests.testapp.models import Order, Received

EAGER_SETTING_SQL = "SELECT coalesce(current_setting('pgpubsub.eager', true), '')"


class Recording:
    """A registry whose handlers append what they receive to ``seen``."""

    def __init__(self, *channels: str) -> None:
        self.seen: list[Event] = []
        self.registry = Registry()
        if channels:
            self.registry.register(self.seen.append, *channels)

    def payloads(self) -> list[str]:
        return [event.payload for event in self.seen]


class PlainEvents(TestCase):
    def test_handlers_run_at_commit_not_before(self) -> None:
        handlers = Recording("a")
        with eager(handlers.registry) as published:
            with self.captureOnCommitCallbacks(execute=True):
                notify("a", {"n": 1})
                assert handlers.seen == []
            assert handlers.payloads() == ['{"n":1}']
        assert published == handlers.seen
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert handlers.seen[0].pid == cursor.fetchone()[0]

    def test_notify_many_in_order_with_notify(self) -> None:
        handlers = Recording("a", "b")
        with eager(handlers.registry), self.captureOnCommitCallbacks(execute=True):
            notify("a", "1")
            notify_many([("b", "2"), ("a", "3"), ("b", "4")])
            notify("a", "5")
        assert [(e.channel, e.payload) for e in handlers.seen] == [
            ("a", "1"),
            ("b", "2"),
            ("a", "3"),
            ("b", "4"),
            ("a", "5"),
        ]

    @pytest.mark.skipif(not is_psycopg3, reason="anotify() needs psycopg 3")
    def test_anotify(self) -> None:
        handlers = Recording("a")
        with eager(handlers.registry), self.captureOnCommitCallbacks(execute=True):
            notify("a", "1")
            async_to_sync(anotify)("a", "2")
            async_to_sync(anotify)("a", "3", durable=True)
        assert handlers.payloads() == ["1", "2", "3"]

    def test_the_global_registry_by_default(self) -> None:
        with eager(), self.captureOnCommitCallbacks(execute=True):
            notify("test.b", "x")
        assert list(Received.objects.values_list("handler", "payload")) == [
            ("recorder", "x"),
            ("second_for_b", "x"),
        ]

    def test_async_handlers_run_to_completion(self) -> None:
        done: list[str] = []

        async def slow_handler(event: Event) -> None:
            await Received.objects.acreate(
                channel=event.channel, payload="async", handler="h", pid=0
            )
            done.append(event.payload)

        handlers = Registry()
        handlers.register(slow_handler, "a")
        with eager(handlers), self.captureOnCommitCallbacks(execute=True):
            notify("a", "x")
        assert done == ["x"]
        assert Received.objects.get().payload == "async"  # in the test's transaction

    def test_a_handler_that_publishes_is_followed(self) -> None:
        handlers = Recording("b")
        handlers.registry.register(lambda event: notify("b", f"from {event.payload}"), "a")
        with eager(handlers.registry), self.captureOnCommitCallbacks(execute=True):
            notify("a", "x")
        assert handlers.payloads() == ["from x"]


class Transactions(TestCase):
    def test_a_rolled_back_savepoint_runs_nothing(self) -> None:
        handlers = Recording("a")
        with eager(handlers.registry), self.captureOnCommitCallbacks(execute=True):
            notify("a", "kept 1")
            with pytest.raises(ZeroDivisionError), transaction.atomic():
                notify("a", "rolled back")
                1 / 0  # noqa: B018
            with transaction.atomic():
                notify("a", "kept 2")
                with transaction.atomic():
                    notify("a", "kept 3")
        assert handlers.payloads() == ["kept 1", "kept 2", "kept 3"]

    def test_a_rolled_back_block_runs_nothing(self) -> None:
        handlers = Recording("a")
        with (
            eager(handlers.registry),
            self.captureOnCommitCallbacks(execute=True) as callbacks,
            pytest.raises(ZeroDivisionError),
            transaction.atomic(),
        ):
            notify("a", "rolled back")
            with transaction.atomic():
                notify("a", "also rolled back")
            1 / 0  # noqa: B018
        assert handlers.seen == []
        assert callbacks == []

    def test_order_among_the_users_own_on_commit_callbacks(self) -> None:
        order: list[str] = []
        handlers = Registry()
        handlers.register(lambda event: order.append(f"handler {event.payload}"), "a")
        with eager(handlers), self.captureOnCommitCallbacks(execute=True):
            transaction.on_commit(lambda: order.append("callback 1"))
            notify("a", "1")
            notify("a", "2")
            transaction.on_commit(lambda: order.append("callback 2"))
            notify("a", "3")
        assert order == ["callback 1", "handler 1", "handler 2", "callback 2", "handler 3"]

    def test_without_captured_callbacks_nothing_runs(self) -> None:
        handlers = Recording("a")
        with eager(handlers.registry) as published:
            notify("a", "x")
            with pytest.raises(AssertionError, match=r"1 event\(s\) were published in a"):
                published.assert_published("a")
        assert handlers.seen == []

    def test_statements_are_not_counted_by_assert_num_queries(self) -> None:
        with eager(Recording("a").registry), self.assertNumQueries(2):
            notify("a", "x")
            Received.objects.count()


class CheckoutTests(TestCase):
    """docs/testing.rst's first example, captureOnCommitCallbacks forgotten."""

    def test_confirmation_is_sent(self) -> None:
        with eager() as published:
            order = Order.objects.create(status="new")  # publish_on_save
        with pytest.raises(AssertionError) as raised:
            published.assert_published("testapp.order", event="created", pk=order.pk)
        assert str(raised.value) == (
            "No event on 'testapp.order' with event='created', pk="
            f"{order.pk!r}.\n"
            "No event was seen at all.\n"
            "1 event(s) were published in a transaction that had not committed when the "
            "eager() block ended, so no handler ran for them and they are not in this "
            "list. A django.test.TestCase never commits: publish inside "
            "self.captureOnCommitCallbacks(execute=True), in the same block: `with "
            "eager() as published, self.captureOnCommitCallbacks(execute=True):` "
            "(pytest-django: django_capture_on_commit_callbacks(execute=True))."
        )

    def test_with_the_commit_captured_nothing_is_left_to_explain(self) -> None:
        with eager() as published, self.captureOnCommitCallbacks(execute=True):
            order = Order.objects.create(status="new")
        published.assert_published("testapp.order", event="created", pk=order.pk)
        with pytest.raises(AssertionError) as raised:
            published.assert_published("testapp.order", event="deleted")
        assert "had not committed" not in str(raised.value)


class Errors(TestCase):
    def setUp(self) -> None:
        self.handlers = Recording()

        def broken(event: Event) -> None:
            Received.objects.create(channel="a", payload="rolled back", handler="broken", pid=0)
            raise ValueError(event.payload)

        # The broken handler first: the one after it still runs.
        self.handlers.registry.register(broken, "a")
        self.handlers.registry.register(self.handlers.seen.append, "a")

    def test_the_first_error_propagates_after_every_handler_ran(self) -> None:
        with (
            eager(self.handlers.registry) as published,
            pytest.raises(ValueError, match="boom"),
            self.captureOnCommitCallbacks(execute=True),
        ):
            notify_many([("a", "boom"), ("a", "again")])
            notify("a", "later")
        # The statement's events went to every handler; the broken one's
        # writes were undone; like any on_commit callback that raises, it
        # stopped the callbacks after it (the later statement's).
        assert self.handlers.payloads() == ["boom", "again"]
        assert [str(error) for error in published.errors] == ["boom", "again"]
        assert Received.objects.count() == 0  # and the test's transaction is usable

    def test_propagate_false_logs_as_the_listener_does(self) -> None:
        with (
            self.assertLogs("django_pgpubsub.testing", logging.ERROR) as logs,
            eager(self.handlers.registry, propagate=False) as published,
            self.captureOnCommitCallbacks(execute=True),
        ):
            notify("a", "boom")
        assert self.handlers.payloads() == ["boom"]
        assert [str(error) for error in published.errors] == ["boom"]
        assert (
            "Handler tests.testing.test_eager.Errors.setUp.<locals>.broken failed" in logs.output[0]
        )


@eager(Recording("a").registry)
class DecoratedClass(TestCase):
    pubsub_eager: Any

    def test_each_test_gets_its_list(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            notify("a", "x")
        self.pubsub_eager.assert_published("a")
        assert len(self.pubsub_eager) == 1

    def test_and_a_fresh_one(self) -> None:
        assert self.pubsub_eager == []


class Decorators(TestCase):
    @eager(Recording("a").registry)
    def test_a_decorated_method(self) -> None:
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            notify("a", "x")
        assert len(callbacks) == 1

    def test_bare_decorator_is_refused(self) -> None:
        with pytest.raises(TypeError, match=r"@eager\(\)"):
            eager(Decorators)  # type: ignore[arg-type]


class Outside(TestCase):
    def test_outside_eager_nothing_changes(self) -> None:
        with (
            eager(Recording("a").registry),
            self.captureOnCommitCallbacks(execute=True),
            connection.cursor() as cursor,
        ):
            cursor.execute(EAGER_SETTING_SQL)
            assert cursor.fetchone() == ("on",)
        handlers = Recording("a")
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            notify("a", "x")
        assert callbacks == []
        assert handlers.seen == []
        assert connection.execute_wrappers == []
        with connection.cursor() as cursor:
            cursor.execute(EAGER_SETTING_SQL)
            assert cursor.fetchone() == ("",)
        assert importlib.import_module("django_pgpubsub.publishing.notify").eager_hook is None


class MoreThanPostgres(TestCase):
    databases = {"default", "other"}  # noqa: RUF012 - as Django declares it

    def test_identical_notifications_are_each_handled(self) -> None:
        handlers = Recording("a")
        with eager(handlers.registry), self.captureOnCommitCallbacks(execute=True):
            notify("a", "same")
            notify("a", "same")
        assert handlers.payloads() == ["same", "same"]

    def test_another_alias_when_asked(self) -> None:
        handlers = Recording("a")
        with (
            eager(handlers.registry, using=["default", "other"]),
            self.captureOnCommitCallbacks(execute=True, using="other"),
        ):
            notify("a", "on other", using="other")
        assert handlers.payloads() == ["on other"]
        with eager(handlers.registry), self.captureOnCommitCallbacks(execute=True, using="other"):
            notify("a", "not watched", using="other")
        assert handlers.payloads() == ["on other"]
