"""``capture_events``: the events committed on some channels while a block ran."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

from django_pgpubsub import conf
from django_pgpubsub.publishing.pubsub import connect
from django_pgpubsub.testing.published import Published
from django_pgpubsub.testing.session import Recorder, arm, disarm, pending, pop, push


class NotCommitted(AssertionError):
    """Events were published on the captured channels in a transaction that
    did not commit before the block ended, so they could not be captured."""


@contextmanager
def capture_events(
    *channels: str, using: str | None = None, timeout: float = 10.0
) -> Iterator[Published]:
    """Collect the events committed on ``channels`` while the block runs.

    Outside any transaction (``TransactionTestCase``,
    ``django_db(transaction=True)``) it listens, as a listener would, so it
    also sees what other connections commit; the list is filled when the
    block exits. No sleeping: a marker notification is sent after the block,
    and PostgreSQL delivers in commit order, so everything committed before
    it has arrived when it does.

    Inside a transaction (a ``TestCase`` test, ``transaction.atomic()``) it
    records this connection's events at commit, in eager mode without running
    handlers: in a ``TestCase``, when ``captureOnCommitCallbacks(execute=True)``
    ends inside the block. Durable events are recorded too (as
    :class:`~django_pgpubsub.DurableEvent`, ``attempt`` 0), and stay pending.

    Args:
        *channels: The channels to listen on.
        using: The ``DATABASES`` alias; default the ``DATABASE`` setting.
        timeout: Seconds to wait for delivery at the end of the block.

    Yields:
        The :class:`~django_pgpubsub.testing.Published` list of events.

    Raises:
        TimeoutError: The marker did not come back within ``timeout``.
        NotCommitted: Inside a transaction, events of ``channels`` were
            published but not committed when the block ended, so nothing
            could see them (in a ``TestCase``: publish inside
            ``captureOnCommitCallbacks(execute=True)``).
    """
    alias = using or conf.database()
    if connections[alias].in_atomic_block:
        with _record_at_commit(alias, channels) as events:
            yield events
        return
    events = Published()
    with connect(using) as pubsub:
        marker = f"django_pgpubsub.capture.{pubsub.pid}"
        pubsub.listen(*channels, marker)
        yield events
        pubsub.notify(marker)
        deadline = time.monotonic() + timeout
        for event in pubsub.events(select_timeout=0.1, yield_timeouts=True):
            if event is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"No delivery within {timeout} s.")
                continue
            if event.channel == marker:
                return
            events.append(event)


@contextmanager
def _record_at_commit(alias: str, channels: tuple[str, ...]) -> Iterator[Published]:
    events = Published(lambda: pending(alias, list(channels)))
    recorder = Recorder(events, None, frozenset(channels), propagate=False)
    arm(alias)
    push(recorder)
    try:
        yield events
        waiting = pending(alias, list(channels))
    finally:
        pop(recorder)
        disarm(alias)
    if waiting:
        raise NotCommitted(
            f"capture_events() saw {len(events)} event(s), but {waiting} more were "
            f"published on {list(channels)} in a transaction that had not committed "
            "when the block ended, and nothing sees an event before its commit. In a "
            "django.test.TestCase, whose transaction never commits, publish inside "
            "self.captureOnCommitCallbacks(execute=True) (pytest-django: "
            "django_capture_on_commit_callbacks(execute=True)) within the block; "
            "or use TransactionTestCase (django_db(transaction=True)) and commit "
            "inside the block."
        )
