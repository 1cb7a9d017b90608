"""Who is watching, in eager mode: the active ``eager()`` and ``capture_events()`` blocks."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from django_pgpubsub.testing.published import Published
from django_pgpubsub.vocabulary.events import Event
from django_pgpubsub.vocabulary.handlers import Registry


@dataclass(eq=False)
class Recorder:
    """One active block.

    Attributes:
        published: Where the events seen are appended.
        handlers: The registry whose handlers run at commit; None for a block
            that only records (``capture_events`` inside a transaction).
        channels: The channels recorded; None for all.
        propagate: Raise the first handler error at the end of the commit.
    """

    published: Published
    handlers: Registry | None
    channels: frozenset[str] | None
    propagate: bool

    def record(self, event: Event) -> None:
        if self.channels is None or event.channel in self.channels:
            self.published.append(event)


recorders: ContextVar[tuple[Recorder, ...]] = ContextVar("pgpubsub_eager", default=())
"""The active blocks, innermost last."""


def push(recorder: Recorder) -> None:
    recorders.set((*recorders.get(), recorder))


def pop(recorder: Recorder) -> None:
    recorders.set(tuple(active for active in recorders.get() if active is not recorder))


def runner() -> Recorder | None:
    """The innermost block that runs handlers, if any."""
    for recorder in reversed(recorders.get()):
        if recorder.handlers is not None:
            return recorder
    return None
