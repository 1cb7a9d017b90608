"""The Event a listener receives."""

from __future__ import annotations

from typing import Any, NoReturn

from django_pgpubsub.vocabulary.payload import decode_payload
from django_pgpubsub.vocabulary.tracing import log_context

_UNDECODED: Any = object()


class _Slots:
    __slots__ = ("_data", "channel", "payload", "pid")


# Setting the slots through their descriptors is how Event stays immutable yet
# cheap to build: a listener makes one per notification.
_set_channel = _Slots.channel.__set__  # type: ignore[attr-defined]
_set_payload = _Slots.payload.__set__  # type: ignore[attr-defined]
_set_pid = _Slots.pid.__set__  # type: ignore[attr-defined]
_set_data = _Slots._data.__set__  # type: ignore[attr-defined]


class Event(_Slots):
    """One notification, exactly as PostgreSQL delivered it.

    Attributes:
        channel: The channel it was sent on.
        payload: The payload text, exactly as sent.
        pid: The process id of the sending backend.
    """

    __slots__ = ()

    _data: Any
    channel: str
    payload: str
    pid: int

    def __init__(self, channel: str, payload: str, pid: int) -> None:
        _set_channel(self, channel)
        _set_payload(self, payload)
        _set_pid(self, pid)
        _set_data(self, _UNDECODED)

    @property
    def data(self) -> Any:
        """The payload decoded as JSON; the payload string when it is not JSON.

        Decoded on first access, once.
        """
        data = self._data
        if data is _UNDECODED:
            data = decode_payload(self.payload)
            _set_data(self, data)
        return data

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Event is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Event is immutable; cannot delete {name!r}")

    def _key(self) -> tuple[Any, ...]:
        """What equality and the hash compare."""
        return (self.channel, self.payload, self.pid)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        # Only events of the same class compare equal: a DurableEvent is also
        # told apart by its id, so equal objects always hash equal.
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Event(pid={self.pid}, channel={self.channel!r}, payload={self.payload!r})"

    def __reduce__(self) -> tuple[type[Event], tuple[Any, ...]]:
        return (Event, (self.channel, self.payload, self.pid))


class _DurableSlots(Event):
    __slots__ = ("attempt", "id")


_set_id = _DurableSlots.id.__set__  # type: ignore[attr-defined]
_set_attempt = _DurableSlots.attempt.__set__  # type: ignore[attr-defined]


class DurableEvent(_DurableSlots):
    """An event sent with ``durable=True``, read from the outbox.

    Attributes:
        id: The outbox row's id: unique per event, and the same on every
            retry, so handlers can use it to stay idempotent.
        attempt: 1 on the first delivery, 2 on the first retry, and so on.
    """

    __slots__ = ()

    id: int
    attempt: int

    def __init__(self, channel: str, payload: str, pid: int, id: int, attempt: int) -> None:
        super().__init__(channel, payload, pid)
        _set_id(self, id)
        _set_attempt(self, attempt)

    def _key(self) -> tuple[Any, ...]:
        return (self.id, self.attempt, self.channel, self.payload)

    def __repr__(self) -> str:
        return (
            f"DurableEvent(id={self.id}, attempt={self.attempt}, pid={self.pid}, "
            f"channel={self.channel!r}, payload={self.payload!r})"
        )

    def __reduce__(self) -> tuple[type[Event], tuple[Any, ...]]:
        return (DurableEvent, (self.channel, self.payload, self.pid, self.id, self.attempt))


def log_fields(event: Event) -> dict[str, object]:
    """``extra`` for a log line about ``event``: ``channel``, for a durable
    event ``event_id`` and ``attempt``, and while its span is current (when
    tracing is on) ``trace_id`` and ``span_id``, so structured logging can
    index them."""
    if isinstance(event, DurableEvent):
        fields: dict[str, object] = {
            "channel": event.channel,
            "event_id": event.id,
            "attempt": event.attempt,
        }
    else:
        fields = {"channel": event.channel}
    fields.update(log_context())
    return fields
