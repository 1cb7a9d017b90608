"""Channel-name validation: a name past 63 bytes, which PostgreSQL would silently truncate,
is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from django_pgpubsub.exceptions import InvalidChannel

MAX_CHANNEL_BYTES = 63


def validate_channel(channel: object) -> str:
    """Return ``channel`` if PostgreSQL can use it verbatim as a channel name.

    Args:
        channel: The candidate name.

    Returns:
        The same string.

    Raises:
        InvalidChannel: Not a str, empty, has a NUL byte or a lone surrogate
            (not encodable in UTF-8), or is over 63 bytes.
    """
    if not isinstance(channel, str):
        raise InvalidChannel(f"Channel names are str, not {type(channel).__name__}: {channel!r}.")
    if channel.isascii():  # the usual name: no encoding needed to measure it
        size = len(channel)
    else:
        try:
            size = len(channel.encode())
        except UnicodeEncodeError as exc:
            raise InvalidChannel(
                f"Channel name cannot be encoded in UTF-8 ({exc.reason}): {channel!r}."
            ) from None
    if not size:
        raise InvalidChannel("Channel name is empty.")
    if size > MAX_CHANNEL_BYTES:
        raise InvalidChannel(
            f"Channel name is {size} bytes in UTF-8; PostgreSQL allows "
            f"{MAX_CHANNEL_BYTES} and would silently truncate it: {channel!r}."
        )
    if "\x00" in channel:
        raise InvalidChannel(f"Channel name contains a NUL byte: {channel!r}.")
    return channel


def validate_channels(channels: Iterable[str]) -> tuple[str, ...]:
    """Return ``channels`` as a tuple, each checked by :func:`validate_channel`.

    Raises:
        InvalidChannel: ``channels`` is a single ``str`` (which would otherwise
            be taken letter by letter), or one of them is unusable.
    """
    if isinstance(channels, str | bytes):
        raise InvalidChannel(
            f"Expected a list of channel names, not the string {channels!r}; write [{channels!r}]."
        )
    return tuple(validate_channel(channel) for channel in channels)
