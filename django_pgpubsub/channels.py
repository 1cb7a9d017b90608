"""Channel-name validation.

PostgreSQL silently truncates identifiers past 63 bytes, so a long name would
quietly listen on a different channel than the one notified. We refuse it.
"""

from __future__ import annotations

from django_pgpubsub.exceptions import InvalidChannel

MAX_CHANNEL_BYTES = 63

# Channels are few and reused on every notify; remembering the valid ones keeps
# validation off the hot path. Bounded so hostile input cannot grow it forever.
_valid: set[str] = set()
_VALID_CACHE_SIZE = 4096


def validate_channel(channel: object) -> str:
    """Return ``channel`` if PostgreSQL can use it verbatim as a channel name.

    Args:
        channel: The candidate name.

    Returns:
        The same string.

    Raises:
        InvalidChannel: Not a str, empty, has a NUL byte, or is over 63 bytes.
    """
    if channel in _valid:
        return channel
    if not isinstance(channel, str):
        raise InvalidChannel(f"Channel names are str, not {type(channel).__name__}: {channel!r}.")
    if not channel:
        raise InvalidChannel("Channel name is empty.")
    if "\x00" in channel:
        raise InvalidChannel(f"Channel name contains a NUL byte: {channel!r}.")
    size = len(channel.encode())
    if size > MAX_CHANNEL_BYTES:
        raise InvalidChannel(
            f"Channel name is {size} bytes in UTF-8; PostgreSQL allows "
            f"{MAX_CHANNEL_BYTES} and would silently truncate it: {channel!r}."
        )
    if len(_valid) < _VALID_CACHE_SIZE:
        _valid.add(channel)
    return channel
