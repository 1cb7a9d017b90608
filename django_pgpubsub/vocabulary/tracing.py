"""OpenTelemetry spans of sending and handling events, and the trace context stored with
durable ones; all of it inert unless the application configured a tracer provider.

Nothing here imports OpenTelemetry until the application has: a process that
never imported ``opentelemetry.trace`` cannot have configured a provider, and
costs a dictionary lookup per batch (see docs/tracing.rst).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from django_pgpubsub import conf
from django_pgpubsub.vocabulary.handlers import Handler, handler_name
from django_pgpubsub.vocabulary.payload import MAX_PAYLOAD_BYTES

if TYPE_CHECKING:  # events.py imports this module: log_fields() reads log_context()
    from django_pgpubsub.vocabulary.events import Event

# OpenTelemetry semantic conventions for messaging spans, v1.27.0. The system
# is not one of the well-known values; the conventions allow a custom one.
SYSTEM = "django_pgpubsub"
SYSTEM_KEY = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
BATCH_COUNT = "messaging.batch.message_count"
ERROR_TYPE = "error.type"
# Ours, in our namespace.
ATTEMPT = "django_pgpubsub.attempt"
HANDLER = "django_pgpubsub.handler"
DURABLE = "django_pgpubsub.durable"

INSTRUMENTATION = "django_pgpubsub"


class _Api:
    """The OpenTelemetry modules, imported once, the first time tracing is on."""

    def __init__(self, trace: ModuleType) -> None:
        # Here, not at the top: a process that does not trace never imports them.
        from opentelemetry import context, propagate  # noqa: PLC0415

        self.trace = trace
        self.context = context
        self.propagate = propagate
        self.provider: object = None
        self.tracer: Any = None


# The one _Api, once loaded.
_loaded: list[_Api] = []


def _active() -> _Api | None:
    """The API with the tracer of the configured provider, or None when there is none."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None  # nobody imported OpenTelemetry: no provider is configured
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    if not _loaded:
        _loaded.append(_Api(trace))
    api = _loaded[0]
    if api.provider is not provider:
        api.tracer = provider.get_tracer(INSTRUMENTATION)
        api.provider = provider
    return api


def enabled() -> bool:
    """Whether events are traced now: a tracer provider is configured."""
    return _active() is not None


def error_type(exc: BaseException) -> str:
    """``error.type``: the exception's fully qualified class name."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class _Off:
    """What every helper returns while tracing is off: a context manager that does nothing."""

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    headers: str | None = None

    def failed(self, exc: BaseException) -> None:
        """Nothing to record."""


OFF = _Off()


class _Scope:
    """A span, current from ``__enter__`` to ``__exit__``, which ends it."""

    headers: str | None = None

    def __init__(self, api: _Api, span: Any) -> None:
        self.api = api
        self.span = span
        self._token: object = None

    def __enter__(self) -> _Scope:
        api = self.api
        self._token = api.context.attach(api.trace.set_span_in_context(self.span))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None:
                self.failed(exc)
        finally:
            self.api.context.detach(self._token)
            self.span.end()

    def failed(self, exc: BaseException) -> None:
        """Record ``exc`` on the span: ``error.type``, the exception, status ERROR."""
        span = self.span
        if span.is_recording():
            trace = self.api.trace
            span.set_attribute(ERROR_TYPE, error_type(exc))
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def sending(channels: Sequence[str], *, durable: bool, batch: bool = False) -> _Off | _Scope:
    """The producer ("send") span of one ``notify()`` or ``notify_many()``.

    Current while the context manager runs; what raises inside it fails the
    span. Its ``headers`` are the trace context to store beside a durable
    event (JSON text, through the application's propagator), None when
    tracing is off.
    """
    api = _active()
    if api is None:
        return OFF
    distinct = set(channels)
    destination = channels[0] if len(distinct) == 1 else None
    attributes: dict[str, Any] = {
        SYSTEM_KEY: SYSTEM,
        OPERATION_TYPE: "send",
        OPERATION_NAME: "send",
        DURABLE: durable,
    }
    if destination is not None:
        attributes[DESTINATION] = destination
    if batch and len(channels) != 1:
        attributes[BATCH_COUNT] = len(channels)
    span = api.tracer.start_span(
        f"send {destination}" if destination is not None else "send",
        kind=api.trace.SpanKind.PRODUCER,
        attributes=attributes,
    )
    scope = _Scope(api, span)
    carrier: dict[str, str] = {}
    api.propagate.inject(carrier, context=api.trace.set_span_in_context(span))
    scope.headers = json.dumps(carrier, separators=(",", ":"), sort_keys=True) if carrier else None
    return scope


# TRACE_PLAIN_EVENTS: a plain payload sent as MARK + headers + MARK + payload.
# A record separator: JSON text never starts with one, and a str payload
# that does would have to be followed by a JSON object and another one.
MARK = "\x1e"


def wrap_plain(text: str, headers: str | None) -> str:
    """``text`` as a traced plain event's payload is sent: behind its trace
    context when ``TRACE_PLAIN_EVENTS`` is on and it fits in a NOTIFY, else as is."""
    if headers is None or not conf.trace_plain_events():
        return text
    wrapped = f"{MARK}{headers}{MARK}{text}"
    if len(wrapped.encode("utf-8")) > MAX_PAYLOAD_BYTES:
        return text  # the payload's size is the user's: the context gives way
    return wrapped


def wrap_plain_many(texts: list[str], headers: str | None) -> list[str]:
    """:func:`wrap_plain` of each of ``texts`` (themselves while tracing is off)."""
    if headers is None or not conf.trace_plain_events():
        return texts
    return [wrap_plain(text, headers) for text in texts]


def unwrap_plain(payload: str) -> tuple[str, str | None]:
    """A received plain payload without the trace context in front, and that
    context (None when there is none)."""
    if not payload.startswith(MARK):
        return payload, None
    end = payload.find(MARK, 1)
    if end < 0 or _carrier(payload[1:end]) is None:
        return payload, None
    return payload[end + 1 :], payload[1:end]


def _carrier(headers: str | None) -> dict[str, str] | None:
    if not headers:
        return None
    try:
        carrier = json.loads(headers)
    except ValueError:
        return None
    return carrier if isinstance(carrier, dict) else None


def processing(
    event: Event, functions: Iterable[Handler], headers: str | None = None
) -> _Off | _Scope:
    """The consumer ("process") span of one event's handlers.

    A durable event's first attempt is a child of the context stored in its
    ``headers``; a later attempt starts a new trace, linked to that context.
    A plain event's span is a child of the context its payload carried
    (``TRACE_PLAIN_EVENTS``), else starts a new trace. Call ``failed(exc)``
    on it when a handler raised.
    """
    api = _active()
    if api is None:
        return OFF
    trace = api.trace
    names = [handler_name(function) for function in functions]
    attributes: dict[str, Any] = {
        SYSTEM_KEY: SYSTEM,
        OPERATION_TYPE: "process",
        OPERATION_NAME: "process",
        DESTINATION: event.channel,
        HANDLER: names[0] if len(names) == 1 else names,
    }
    # A new trace unless the sender's context says otherwise: never the
    # listener's own current context.
    parent = api.context.Context()
    links = []
    attempt: int | None = getattr(event, "attempt", None)  # a DurableEvent's
    if attempt is not None:
        attributes[MESSAGE_ID] = str(getattr(event, "id", ""))
        attributes[ATTEMPT] = attempt
        attributes[DURABLE] = True
    carrier = _carrier(headers)
    if carrier is not None:
        sent = api.propagate.extract(carrier, context=api.context.Context())
        if attempt is None or attempt <= 1:
            parent = sent
        else:
            context = trace.get_current_span(sent).get_span_context()
            if context.is_valid:
                links.append(trace.Link(context))
    span = api.tracer.start_span(
        f"process {event.channel}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    )
    return _Scope(api, span)


def log_context() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span, for a log record's ``extra``;
    empty when nothing is traced."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }
