"""The Event a listener receives."""

from __future__ import annotations

from typing import Any, NoReturn

from django_pgpubsub.payload import decode_payload

_UNDECODED: Any = object()


class Event:
    """One notification, exactly as PostgreSQL delivered it.

    Attributes:
        channel: The channel it was sent on.
        payload: The payload text, exactly as sent.
        pid: The process id of the sending backend.
    """

    __slots__ = ("_data", "channel", "payload", "pid")

    _data: Any
    channel: str
    payload: str
    pid: int

    def __init__(self, channel: str, payload: str, pid: int) -> None:
        _set = object.__setattr__
        _set(self, "channel", channel)
        _set(self, "payload", payload)
        _set(self, "pid", pid)
        _set(self, "_data", _UNDECODED)

    @property
    def data(self) -> Any:
        """The payload decoded as JSON; the payload string when it is not JSON.

        Decoded on first access, once.
        """
        data = self._data
        if data is _UNDECODED:
            data = decode_payload(self.payload)
            object.__setattr__(self, "_data", data)
        return data

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Event is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Event is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.channel, self.payload, self.pid) == (
            other.channel,
            other.payload,
            other.pid,
        )

    def __hash__(self) -> int:
        return hash((self.channel, self.payload, self.pid))

    def __repr__(self) -> str:
        return f"Event(pid={self.pid}, channel={self.channel!r}, payload={self.payload!r})"

    def __reduce__(self) -> tuple[type[Event], tuple[str, str, int]]:
        return (Event, (self.channel, self.payload, self.pid))
