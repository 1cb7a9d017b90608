"""Helpers for testing, in your own project, the code that publishes and its handlers.

- :func:`eager`: handlers run when the transaction commits, in the test's
  thread, with no listener; works inside ``TestCase`` with
  ``captureOnCommitCallbacks(execute=True)``; also the pytest fixture
  ``pubsub_eager`` (:mod:`django_pgpubsub.testing.pytest_plugin`).
- :func:`capture_events`: the events committed on some channels.
- :func:`dispatch`: run a channel's handlers now, on an event you build.
- :class:`Published`: the list they give, with ``assert_published``.
"""

from __future__ import annotations

from django_pgpubsub.testing.capture import NotCommitted, capture_events
from django_pgpubsub.testing.dispatch import dispatch
from django_pgpubsub.testing.eager import eager
from django_pgpubsub.testing.published import Published

__all__ = ["NotCommitted", "Published", "capture_events", "dispatch", "eager"]
