"""Tracing: the producer span of notify() and the consumer span of each event's
handlers share one trace through the outbox's headers, with the SDK's
in-memory exporter and a real listener (docs/tracing.rst)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.test import override_settings
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from django_pgpubsub import DurableEvent, Event, PubSub, Registry, anotify, notify, notify_many
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.testing import eager
from django_pgpubsub.vocabulary import tracing
from django_pgpubsub.vocabulary.handlers import handler_name
from tests.helpers import ListenerThread, collect, run_listener, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

QUICK_RETRIES = {"DURABLE_MAX_ATTEMPTS": 3, "DURABLE_RETRY_DELAY": 0.01}


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """A configured tracer provider, for this test only, with an in-memory exporter.

    OpenTelemetry lets a process set its global provider once; the test sets
    (and monkeypatch restores) the variable that holds it.
    """
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    yield memory
    provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer("tests")


def spans(memory: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in memory.get_finished_spans() if span.kind == kind]


def traceparent(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def test_durable_event_and_its_handler_share_one_trace(
    exporter: InMemorySpanExporter, registry: Registry
) -> None:
    seen: list[DurableEvent] = []
    registry.register(seen.append, "orders")  # type: ignore[arg-type]
    with tracer().start_as_current_span("request") as request:
        notify("orders", {"id": 1}, durable=True)
    row = OutboxEvent.objects.get()
    assert row.payload == '{"id":1}'  # the payload as ever: the context is beside it
    assert set(row.headers) == {"traceparent"}

    assert run_listener(registry, channels=["orders"], max_events=1) == 1

    [send] = spans(exporter, SpanKind.PRODUCER)
    [process] = spans(exporter, SpanKind.CONSUMER)
    assert send.name == "send orders"
    assert send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "django_pgpubsub",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "orders",
        "django_pgpubsub.durable": True,
    }
    assert process.name == "process orders"
    assert process.context is not None
    assert process.context.trace_id == request.get_span_context().trace_id
    assert process.parent is not None
    assert process.parent.span_id == traceparent(send)[1]
    assert process.links == ()
    attributes = dict(process.attributes or {})
    assert attributes["messaging.message.id"] == str(seen[0].id)
    assert attributes["messaging.destination.name"] == "orders"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["django_pgpubsub.attempt"] == 1
    assert attributes["django_pgpubsub.handler"] == handler_name(seen.append)  # type: ignore[arg-type]
    assert process.status.is_ok


def test_plain_event_gets_a_consumer_span_in_a_trace_of_its_own(
    exporter: InMemorySpanExporter, running_listener: Any, registry: Registry
) -> None:
    seen: list[Event] = []
    registry.register(seen.append, "plain")
    listener = running_listener(["plain"])
    with tracer().start_as_current_span("request") as request:
        notify("plain", "hello")
    wait_until(lambda: len(spans(exporter, SpanKind.CONSUMER)) == 1, what="a consumer span")
    listener.stop()
    assert seen[0].payload == "hello"  # nothing added to a plain payload
    [send] = spans(exporter, SpanKind.PRODUCER)
    [process] = spans(exporter, SpanKind.CONSUMER)
    assert dict(send.attributes or {})["django_pgpubsub.durable"] is False
    assert process.name == "process plain"
    assert process.parent is None  # plain events carry no context (yet)
    assert traceparent(process)[0] != request.get_span_context().trace_id
    attributes = dict(process.attributes or {})
    assert attributes["messaging.destination.name"] == "plain"
    assert attributes["django_pgpubsub.handler"] == handler_name(seen.append)
    assert "messaging.message.id" not in attributes


def test_a_failed_handler_fails_its_span_and_its_retry_is_linked(
    exporter: InMemorySpanExporter, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    def flaky(event: DurableEvent) -> None:
        attempts.append(event.attempt)
        if event.attempt == 1:
            raise KeyError("first time")

    registry.register(flaky, "flaky")  # type: ignore[arg-type]
    with override_settings(PGPUBSUB=QUICK_RETRIES):
        with tracer().start_as_current_span("request"):
            notify("flaky", "x", durable=True)
        with caplog.at_level(logging.ERROR, logger="django_pgpubsub.durable"):
            assert run_listener(registry, channels=["flaky"], max_events=2) == 2
    assert attempts == [1, 2]

    [send] = spans(exporter, SpanKind.PRODUCER)
    first, second = spans(exporter, SpanKind.CONSUMER)
    assert first.parent is not None
    assert first.parent.span_id == traceparent(send)[1]
    assert traceparent(first)[0] == traceparent(send)[0]
    assert not first.status.is_ok
    assert dict(first.attributes or {})["error.type"] == "KeyError"
    assert [event.name for event in first.events] == ["exception"]
    # The retry: a new trace, linked to the sender's context.
    assert second.parent is None
    assert traceparent(second)[0] != traceparent(send)[0]
    [link] = second.links
    assert (link.context.trace_id, link.context.span_id) == traceparent(send)
    assert dict(second.attributes or {})["django_pgpubsub.attempt"] == 2
    assert second.status.is_ok
    # The failure's log record names the span it happened in.
    [record] = [r for r in caplog.records if r.getMessage().startswith("Handler ")]
    assert record.trace_id == format(traceparent(first)[0], "032x")  # type: ignore[attr-defined]
    assert record.span_id == format(traceparent(first)[1], "016x")  # type: ignore[attr-defined]


def test_a_group_of_events_makes_one_span_per_event(
    exporter: InMemorySpanExporter, registry: Registry
) -> None:
    registry.register(lambda event: None, "many")
    with tracer().start_as_current_span("request"):
        assert notify_many([("many", n) for n in range(50)], durable=True) == 50
    with override_settings(PGPUBSUB={"DURABLE_BATCH_SIZE": 50}):
        assert run_listener(registry, channels=["many"], max_events=50) == 50

    [send] = spans(exporter, SpanKind.PRODUCER)
    assert dict(send.attributes or {})["messaging.batch.message_count"] == 50
    processed = spans(exporter, SpanKind.CONSUMER)
    assert len(processed) == 50
    assert all(span.end_time is not None for span in processed)
    assert {span.parent.span_id for span in processed if span.parent} == {traceparent(send)[1]}
    ids = {dict(span.attributes or {})["messaging.message.id"] for span in processed}
    assert len(ids) == 50


def test_eager_mode_makes_the_listeners_spans(
    exporter: InMemorySpanExporter, registry: Registry
) -> None:
    registry.register(lambda event: None, "eager.durable")
    registry.register(lambda event: None, "eager.plain")
    with eager(registry), tracer().start_as_current_span("request"), transaction.atomic():
        notify("eager.durable", {"n": 1}, durable=True)
        notify("eager.plain", "p")
    sends = spans(exporter, SpanKind.PRODUCER)
    durable, plain = sorted(spans(exporter, SpanKind.CONSUMER), key=lambda span: span.name)
    [durable_send] = [span for span in sends if span.name == "send eager.durable"]
    assert durable.name == "process eager.durable"
    assert durable.parent is not None
    assert durable.parent.span_id == traceparent(durable_send)[1]
    assert dict(durable.attributes or {})["django_pgpubsub.attempt"] == 1
    assert plain.name == "process eager.plain"
    assert plain.parent is None  # as the listener does: plain events carry no context


def test_an_unsampled_sender_makes_unsampled_handlers(
    exporter: InMemorySpanExporter, registry: Registry
) -> None:
    registry.register(lambda event: None, "quiet")
    unsampled = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0x1234,
            span_id=0x5678,
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
        )
    )
    with trace.use_span(unsampled):
        notify("quiet", "q", durable=True)
    [headers] = OutboxEvent.objects.values_list("headers", flat=True)
    # The context is stored all the same, with its sampled flag off.
    assert headers["traceparent"].startswith(f"00-{0x1234:032x}-")
    assert headers["traceparent"].endswith("-00")
    assert run_listener(registry, channels=["quiet"], max_events=1) == 1
    assert exporter.get_finished_spans() == ()


@pytest.mark.skipif(not is_psycopg3, reason="anotify() needs psycopg 3")
def test_anotify_sends_in_its_callers_trace(exporter: InMemorySpanExporter) -> None:
    async def publish() -> None:
        with tracer().start_as_current_span("request"):
            await anotify("async", "a", durable=True)

    # async_to_sync: anotify's ORM work runs in this thread, on the test database.
    async_to_sync(publish)()
    request = next(s for s in exporter.get_finished_spans() if s.name == "request")
    [send] = spans(exporter, SpanKind.PRODUCER)
    assert send.parent is not None
    assert send.parent.span_id == traceparent(request)[1]


def outbox_rows() -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT channel, payload, key, ordering_key, headers FROM django_pgpubsub_outbox "
            "ORDER BY id"
        )
        return list(cursor.fetchall())


def test_without_a_tracer_provider_nothing_changes(registry: Registry) -> None:
    assert not tracing.enabled()
    received: list[Event] = []
    registry.register(received.append, "off")
    with ListenerThread(Listener(["off"], registry=registry)).wait_connected():
        notify("off", {"é": 1})
        wait_until(lambda: len(received) == 1, what="the plain event")
    assert received[0].payload == '{"é":1}'
    notify("off", {"a": [1, 2]}, durable=True, key="k", ordering_key="o")
    notify_many([("off", "x"), ("off", {"b": None})], durable=True)
    assert outbox_rows() == [
        ("off", '{"a":[1,2]}', "k", "o", None),
        ("off", "x", None, None, None),
        ("off", '{"b":null}', None, None, None),
    ]
    assert tracing.log_context() == {}


def test_headers_are_json_of_the_propagators_fields(exporter: InMemorySpanExporter) -> None:
    with tracer().start_as_current_span("request"):
        notify("h", "", durable=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT headers::text FROM django_pgpubsub_outbox")
        [(text,)] = cursor.fetchall()
    assert list(json.loads(text)) == ["traceparent"]


TRACE_PLAIN = {"TRACE_PLAIN_EVENTS": True}


def test_trace_plain_events_puts_plain_events_in_the_senders_trace(
    exporter: InMemorySpanExporter, running_listener: Any, registry: Registry, pubsub: PubSub
) -> None:
    seen: list[Event] = []
    registry.register(seen.append, "plain")
    pubsub.listen("plain")
    listener = running_listener(["plain"])
    with override_settings(PGPUBSUB=TRACE_PLAIN), tracer().start_as_current_span("request"):
        notify("plain", {"n": 1})
        notify_many([("plain", "a"), ("plain", "b")])
    wait_until(lambda: len(seen) == 3, what="the plain events")
    listener.stop()
    # The handlers see the payloads as sent...
    assert [event.payload for event in seen] == ['{"n":1}', "a", "b"]
    # ...other receivers see the context in front (why it is opt-in).
    [raw, *_] = collect(pubsub, 3)
    assert raw.payload.startswith(tracing.MARK + '{"traceparent":"00-')
    assert raw.payload.endswith(tracing.MARK + '{"n":1}')
    single, batch = spans(exporter, SpanKind.PRODUCER)
    processed = spans(exporter, SpanKind.CONSUMER)
    assert [span.parent.span_id for span in processed if span.parent] == [
        traceparent(single)[1],
        traceparent(batch)[1],
        traceparent(batch)[1],
    ]
    assert {traceparent(span)[0] for span in processed} == {traceparent(single)[0]}


def test_trace_plain_events_in_eager_mode(
    exporter: InMemorySpanExporter, registry: Registry
) -> None:
    seen: list[Event] = []
    registry.register(seen.append, "eager.plain")
    with (
        override_settings(PGPUBSUB=TRACE_PLAIN),
        eager(registry) as published,
        tracer().start_as_current_span("request"),
        transaction.atomic(),
    ):
        notify("eager.plain", "p")
    assert [event.payload for event in seen] == ["p"]
    assert [event.payload for event in published] == ["p"]
    [send] = spans(exporter, SpanKind.PRODUCER)
    [process] = spans(exporter, SpanKind.CONSUMER)
    assert process.parent is not None
    assert process.parent.span_id == traceparent(send)[1]


def test_trace_plain_events_changes_nothing_while_tracing_is_off(pubsub: PubSub) -> None:
    pubsub.listen("off")
    with override_settings(PGPUBSUB=TRACE_PLAIN):
        notify("off", "as is")
    assert [event.payload for event in collect(pubsub, 1)] == ["as is"]


def test_a_plain_payload_near_the_limit_is_sent_without_its_context(
    exporter: InMemorySpanExporter, pubsub: PubSub
) -> None:
    pubsub.listen("big")
    with override_settings(PGPUBSUB=TRACE_PLAIN), tracer().start_as_current_span("request"):
        notify("big", "x" * 7999)
    assert [event.payload for event in collect(pubsub, 1)] == ["x" * 7999]


@pytest.mark.parametrize(
    "payload",
    [
        tracing.MARK,
        tracing.MARK + "no end",
        tracing.MARK + "not json" + tracing.MARK + "p",
        tracing.MARK + "[1]" + tracing.MARK + "p",
        "plain " + tracing.MARK + "{}" + tracing.MARK,
    ],
)
def test_only_a_context_in_front_is_taken_off(payload: str) -> None:
    assert tracing.unwrap_plain(payload) == (payload, None)


# A process that does not trace: the package, a send and a consumer span's
# helpers import nothing of OpenTelemetry (installed here, for the tests).
UNTRACED = """
import sys
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["django_pgpubsub"])
django.setup()
import django_pgpubsub
from django_pgpubsub.vocabulary import tracing
from django_pgpubsub.vocabulary.events import Event, log_fields
with tracing.sending(["c"], durable=True) as span:
    assert span.headers is None
with tracing.processing(Event("c", "p", 1), []):
    pass
assert not tracing.enabled() and log_fields(Event("c", "p", 1)) == {"channel": "c"}
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""


def test_an_untraced_process_imports_no_opentelemetry() -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNTRACED], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
