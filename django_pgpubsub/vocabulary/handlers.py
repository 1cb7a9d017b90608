"""The handler registry and the ``@handler`` decorator."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import async_to_sync, iscoroutinefunction

from django_pgpubsub.exceptions import InvalidChannel
from django_pgpubsub.vocabulary.channel_names import validate_channel

if TYPE_CHECKING:  # events.py imports tracing, which names handlers
    from django_pgpubsub.vocabulary.events import Event

Handler = Callable[["Event"], Any]
HandlerT = TypeVar("HandlerT", bound=Handler)


def handler_name(function: Handler) -> str:
    """``module.qualname`` of a handler, for logs and ``--list``."""
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{getattr(function, '__qualname__', repr(function))}"


def run_to_completion(function: Handler) -> Handler:
    """``function`` itself, or for an ``async def`` one a plain function awaiting it.

    The plain function runs the coroutine with asgiref's ``async_to_sync`` on
    an event loop of its own, while the ORM calls it makes through
    ``sync_to_async`` (as Django's async ORM methods do) run back in the
    calling thread: on the caller's connections and inside its transaction.
    """
    if not iscoroutinefunction(function):
        return function
    runner = async_to_sync(function)

    @functools.wraps(function)
    def run(event: Event) -> Any:
        return runner(event)

    return run


class Registry:
    """Which functions handle which channel, in registration order."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[Handler, ...]] = {}

    def register(self, function: Handler, *channels: str) -> None:
        """Register ``function`` for each channel; registering it again is a no-op.

        Raises:
            InvalidChannel: No channel given, or a channel name is unusable.
        """
        if not channels:
            raise InvalidChannel(f"Register {function!r} for at least one channel.")
        names = [validate_channel(channel) for channel in channels]
        for name in names:
            current = self._handlers.get(name, ())
            if function not in current:
                # Tuples: the listener iterates them while dispatching, and a
                # handler registered mid-dispatch must not change that loop.
                self._handlers[name] = (*current, function)

    def unregister(self, function: Handler, *channels: str) -> None:
        """Remove ``function`` from ``channels`` (none: from every channel)."""
        for name in channels or tuple(self._handlers):
            remaining = tuple(f for f in self._handlers.get(name, ()) if f != function)
            if remaining:
                self._handlers[name] = remaining
            else:
                self._handlers.pop(name, None)

    def handlers(self, channel: str) -> tuple[Handler, ...]:
        """The handlers of ``channel``, in registration order."""
        return self._handlers.get(channel, ())

    def sync_handlers(self, channel: str) -> tuple[Handler, ...]:
        """The handlers of ``channel`` as plain functions (see :func:`run_to_completion`)."""
        return tuple(run_to_completion(function) for function in self.handlers(channel))

    def channels(self) -> frozenset[str]:
        """Every channel with at least one handler."""
        return frozenset(self._handlers)

    def reset(self) -> None:
        """Forget every handler."""
        self._handlers.clear()

    @contextmanager
    def isolated(self) -> Iterator[Registry]:
        """Run a block with an empty registry, restoring the previous one after."""
        saved = dict(self._handlers)
        self._handlers.clear()
        try:
            yield self
        finally:
            self._handlers = saved


registry = Registry()
"""The registry that ``@handler`` fills and ``listen_events`` runs."""


def handler(*channels: str) -> Callable[[HandlerT], HandlerT]:
    """Register the decorated function as a handler of ``channels``.

    The function is called with an :class:`~django_pgpubsub.Event` and is
    returned unchanged.

    Args:
        *channels: One or more channel names.

    Raises:
        InvalidChannel: No channel given (``@handler`` without parentheses),
            or a channel name is unusable.
    """
    if len(channels) == 1 and callable(channels[0]):
        raise InvalidChannel("Name the channels: @handler('orders'), not a bare @handler.")
    for channel in channels:
        validate_channel(channel)
    if not channels:
        raise InvalidChannel("@handler() needs at least one channel name.")

    def decorate(function: HandlerT) -> HandlerT:
        registry.register(function, *channels)
        return function

    return decorate
