"""``eager()``: handlers run at commit, in the test's own thread, with no listener."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError
from django.test.utils import TestContextDecorator

from django_pgpubsub import conf
from django_pgpubsub.testing.published import Published
from django_pgpubsub.testing.session import Recorder, arm, disarm, pending, pop, push
from django_pgpubsub.vocabulary.handlers import Registry, registry


class eager(TestContextDecorator):
    """Run the registered handlers when the transaction commits, in this thread.

    A context manager, a decorator of a test function or method, or of a
    ``TestCase`` class (each test then runs in eager mode and finds the
    :class:`Published` list in ``self.pubsub_eager``). Inside it, what
    ``notify()``, ``notify_many()``, ``anotify()``, ``publish_on_save`` and
    the ``publish_changes`` triggers publish is handled when the transaction
    commits: in a ``TestCase``, that is at the end of
    ``self.captureOnCommitCallbacks(execute=True)``; in autocommit, at once.
    A rollback, or a rolled-back savepoint, runs nothing.

    Durable events are real outbox rows: their handlers get a
    :class:`~django_pgpubsub.DurableEvent` with the row's ``id`` and
    ``attempt``; a failed attempt is retried at once, up to
    ``DURABLE_MAX_ATTEMPTS``, and the row is left ``failed`` after the last.

    Args:
        handlers: The registry to run; default the global one (``@handler``).
        using: The aliases to watch; default the ``DATABASE`` setting's.
        propagate: After the commit's events are all handled, raise the first
            exception a handler raised (a durable event's only once its last
            attempt failed). False: log them, as the listener does; they are
            in ``errors`` of the list either way.

    Yields:
        The :class:`Published` list of events seen at commit, in order.
    """

    def __init__(
        self,
        handlers: Registry | None = None,
        *,
        using: str | Iterable[str] | None = None,
        propagate: bool = True,
    ) -> None:
        if handlers is not None and not isinstance(handlers, Registry):
            raise TypeError(
                f"eager() takes a Registry, not {handlers!r}: write @eager(), with parentheses."
            )
        super().__init__(attr_name="pubsub_eager")
        self.handlers = registry if handlers is None else handlers
        self.using = [using] if isinstance(using, str) else None if using is None else list(using)
        self.propagate = propagate
        self._active: list[tuple[Recorder, list[str]]] = []

    def enable(self) -> Published:
        aliases = self.using or [conf.database()]
        published = Published(lambda: sum(pending(alias) for alias in aliases))
        recorder = Recorder(published, self.handlers, None, self.propagate)
        armed: list[str] = []
        try:
            for alias in aliases:
                arm(alias)
                armed.append(alias)
        except BaseException:
            for alias in armed:
                disarm(alias)
            raise
        push(recorder)
        self._active.append((recorder, aliases))
        return published

    def disable(self) -> None:
        recorder, aliases = self._active.pop()
        # Counted while the connections are armed: after, nothing says what
        # was left uncommitted, which assert_published must still tell.
        recorder.published._block_ended(_left_uncommitted(aliases))
        pop(recorder)
        for alias in aliases:
            disarm(alias)

    def __enter__(self) -> Published:  # type: ignore[override]
        return self.enable()

    def __exit__(self, *exc_info: Any) -> None:
        self.disable()


def _left_uncommitted(aliases: list[str]) -> int:
    """How many events published on ``aliases`` wait for a commit; 0 when a
    broken transaction cannot tell (its rollback drops them anyway)."""
    try:
        return sum(pending(alias) for alias in aliases)
    except DatabaseError:
        return 0
