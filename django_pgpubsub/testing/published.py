"""The list of events a test saw, with assertions that explain themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django_pgpubsub.vocabulary.events import Event

_MISSING: Any = object()


def _matches(event: Event, match: dict[str, Any]) -> bool:
    data = event.data
    if not match:
        return True
    if not isinstance(data, dict):
        return False
    return all(data.get(key, _MISSING) == value for key, value in match.items())


def _describe(event: Event) -> str:
    return f"  {event.channel}: {event.payload[:200]}"


class Published(list[Event]):
    """The events seen, in order: a ``list`` of :class:`~django_pgpubsub.Event`
    (:class:`~django_pgpubsub.DurableEvent` for durable ones).

    Attributes:
        errors: Exceptions raised by handlers in eager mode, in order.
    """

    def __init__(self, pending: Callable[[], int] | None = None) -> None:
        super().__init__()
        self.errors: list[BaseException] = []
        self._pending = pending
        # Set when the block that fills the list ended, with how many events
        # were left uncommitted then: they are never handled nor recorded.
        self._left_uncommitted: int | None = None

    def _block_ended(self, left_uncommitted: int) -> None:
        """The ``eager()`` block ended with ``left_uncommitted`` events that
        no commit handled: ``assert_published`` says so from now on."""
        self._pending = None
        self._left_uncommitted = left_uncommitted

    def on(self, channel: str) -> list[Event]:
        """The events of ``channel``, in order."""
        return [event for event in self if event.channel == channel]

    def assert_published(self, channel: str, /, **match: Any) -> list[Event]:
        """Assert that at least one event of ``channel`` matches ``match``.

        Each keyword is compared with the item of that name in the event's
        decoded payload (``event.data``), which must be a JSON object; with no
        keyword, any event of ``channel`` matches.

        Returns:
            The matching events.

        Raises:
            AssertionError: None matched. The message lists what was seen, and
                says when events were published in a transaction that has not
                committed yet, or had not when the ``eager()`` block ended (in
                ``TestCase``: outside ``captureOnCommitCallbacks(execute=True)``).
        """
        found = [event for event in self.on(channel) if _matches(event, match)]
        if found:
            return found
        wanted = ", ".join(f"{key}={value!r}" for key, value in match.items())
        lines = [f"No event on {channel!r}" + (f" with {wanted}" if wanted else "") + "."]
        same = self.on(channel)
        if same:
            lines.append(f"Events on {channel!r}:")
            lines.extend(_describe(event) for event in same)
        others = [event for event in self if event.channel != channel]
        if others:
            lines.append("Events on other channels:")
            lines.extend(_describe(event) for event in others)
        if not self:
            lines.append("No event was seen at all.")
        pending = self._pending() if self._pending is not None else 0
        if pending:
            lines.append(
                f"{pending} event(s) were published in a transaction that has not "
                "committed: in a TestCase, publish inside "
                "self.captureOnCommitCallbacks(execute=True) (pytest-django: "
                "django_capture_on_commit_callbacks(execute=True))."
            )
        if self._left_uncommitted:
            lines.append(
                f"{self._left_uncommitted} event(s) were published in a transaction that "
                "had not committed when the eager() block ended, so no handler ran for "
                "them and they are not in this list. A django.test.TestCase never "
                "commits: publish inside self.captureOnCommitCallbacks(execute=True), "
                "in the same block: `with eager() as published, "
                "self.captureOnCommitCallbacks(execute=True):` (pytest-django: "
                "django_capture_on_commit_callbacks(execute=True))."
            )
        raise AssertionError("\n".join(lines))

    def assert_not_published(self, channel: str, /, **match: Any) -> None:
        """Assert that no event of ``channel`` matches ``match`` (as for
        :meth:`assert_published`).

        Raises:
            AssertionError: One did; the message shows it.
        """
        found = [event for event in self.on(channel) if _matches(event, match)]
        if found:
            lines = [f"Unexpected event(s) on {channel!r}:"]
            lines.extend(_describe(event) for event in found)
            raise AssertionError("\n".join(lines))
