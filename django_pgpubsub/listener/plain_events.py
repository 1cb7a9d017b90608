"""Running the handlers of plain events: the listener's hot path."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from django_pgpubsub.vocabulary.events import Event, log_fields
from django_pgpubsub.vocabulary.handlers import Handler, handler_name
from django_pgpubsub.vocabulary.observer import Observer
from django_pgpubsub.vocabulary.tracing import MARK, enabled, processing, unwrap_plain

# Handler errors are the listener's to report: users configure this logger.
logger = logging.getLogger("django_pgpubsub.listener")

LOGGED_PAYLOAD_CHARS = 200


class Stoppable(Protocol):
    @property
    def stopping(self) -> bool: ...


def run_handlers(
    events: list[Event],
    table: dict[str, tuple[Handler, ...]],
    observer: Observer,
    owner: Stoppable,
    limit: int = -1,
) -> int:
    """Run each event's handlers, in order; a handler that raises is logged.

    Args:
        events: The events, in the order received.
        table: Each channel's handlers.
        observer: Told each event's handling time (when it times) and failures.
        owner: Its ``stopping`` is checked after each handler: once true,
            nothing more runs, and the running event is not counted.
        limit: Stop after this many events; -1 for no limit.

    Returns:
        How many events were dispatched.
    """
    # The hot path: locals, and nothing per event that can be done per batch.
    dispatched = 0
    handled = observer.handled if observer.timed else None
    clock = time.perf_counter
    # One clock read per event: each event's time runs from the previous
    # one's end (the loop's own sub-microsecond share included).
    started = clock() if handled is not None else 0.0
    traced = enabled()  # once per batch: off, no span is made
    for received in events:
        event, headers = received, None
        functions = table.get(event.channel, ())
        if event.payload.startswith(MARK):  # sent with TRACE_PLAIN_EVENTS
            event, headers = _unwrap(received)
        if traced:
            if _run_traced(event, functions, observer, owner, headers):
                return dispatched
        else:
            for function in functions:
                try:
                    function(event)
                except Exception:
                    _log_handler_error(observer, function, event)
                if owner.stopping:
                    return dispatched
        if handled is not None:
            ended = clock()
            handled(event.channel, ended - started)
            started = ended
        dispatched += 1
        if dispatched == limit:
            break
    return dispatched


def _unwrap(event: Event) -> tuple[Event, str | None]:
    """``event`` without the trace context its sender put in front of the payload."""
    payload, headers = unwrap_plain(event.payload)
    if headers is None:
        return event, None
    return Event(event.channel, payload, event.pid), headers


def _run_traced(
    event: Event,
    functions: tuple[Handler, ...],
    observer: Observer,
    owner: Stoppable,
    headers: str | None,
) -> bool:
    """Run ``event``'s handlers in its consumer span; return whether the owner stops."""
    with processing(event, functions, headers) as span:
        for function in functions:
            try:
                function(event)
            except Exception as exc:
                span.failed(exc)
                _log_handler_error(observer, function, event)
            if owner.stopping:
                return True
    return False


def _log_handler_error(observer: Observer, function: Handler, event: Event) -> None:
    observer.handler_failed(event.channel, function)
    name = handler_name(function)
    extra = {**log_fields(event), "handler": name}
    logger.exception(
        "Handler %s failed on channel %r; carrying on.", name, event.channel, extra=extra
    )
    logger.debug("The payload was: %.*s", LOGGED_PAYLOAD_CHARS, event.payload, extra=extra)
