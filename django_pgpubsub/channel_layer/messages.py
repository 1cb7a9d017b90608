"""What the Channels layer sends through PostgreSQL: channel names, the JSON encoding, and the
row that holds a message too large for a NOTIFY.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from django_pgpubsub.vocabulary.payload import MAX_PAYLOAD_BYTES

TABLE = "django_pgpubsub_layer_message"
STORED = "#"
_BYTES = "\x00b"
MAX_NAME_BYTES = 63


def pg_channel(prefix: str, kind: str, name: str) -> str:
    """The PostgreSQL channel of a group (kind ``g``), a process (``p``, the part
    of a specific channel name up to ``!``) or a normal channel (``c``).

    Layer names are up to 99 ASCII characters, PostgreSQL's at most 63 bytes:
    a name that does not fit is replaced by a hash of itself.
    """
    full = f"{prefix}.{kind}.{name}"
    if len(full) <= MAX_NAME_BYTES:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:40]
    return f"{prefix}.{kind}#{digest}"


def _default(value: object) -> object:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    raise TypeError(f"A channel layer message cannot hold {type(value).__name__} values.")


def _hook(value: dict[str, Any]) -> object:
    if len(value) == 1 and _BYTES in value:
        return base64.b64decode(value[_BYTES])
    return value


# Built once: json.dumps() and json.loads() with options build one per call.
_ENCODER = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":"))
_DECODER = json.JSONDecoder(object_hook=_hook)
_PLAIN = json.JSONDecoder()
# The bytes marker as JSON writes it: text without it needs no hook.
_BYTES_JSON = json.dumps(_BYTES)[1:-1]


def encode(destination: str, message: dict[str, Any]) -> str:
    """``[destination, message]`` as compact JSON.

    Raises:
        TypeError: A value JSON cannot hold (other than bytes).
    """
    return _ENCODER.encode([destination, message])


def _loads(text: str) -> Any:
    return (_DECODER if _BYTES_JSON in text else _PLAIN).decode(text)


def decode(text: str) -> tuple[str, dict[str, Any]]:
    """The destination and message of :func:`encode`'s (or :func:`tagged`'s) text."""
    decoded = _loads(text)
    return decoded[0], decoded[1]


def copied(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` as a receiver decodes it once sent (tuples become lists,
    keys strings...), without the trip through PostgreSQL.

    Raises:
        TypeError: A value JSON cannot hold (other than bytes).
    """
    result: dict[str, Any] = _loads(_ENCODER.encode(message))
    return result


def tagged(text: str, origin: str) -> str:
    """:func:`encode`'s ``text`` with the sending layer's ``origin`` added."""
    return f'{text[:-1]},"{origin}"]'


def own_tags(origin: str) -> tuple[str, str]:
    """How the payloads that ``origin`` tagged end: inline, and stored."""
    return f',"{origin}"]', f"@{origin}"


def stored_id(payload: str) -> int:
    """The row id of a stored message's payload (``#<id>`` or ``#<id>@<origin>``)."""
    return int(payload[1:].partition("@")[0])


def fits(text: str) -> bool:
    """Whether ``text`` can be a NOTIFY payload."""
    return len(text) * 4 <= MAX_PAYLOAD_BYTES or len(text.encode()) <= MAX_PAYLOAD_BYTES


NOTIFY = "SELECT pg_notify(%s, %s)"

# Stores a message and notifies its id (and origin, if any). Its expiry runs from the send
# (clock_timestamp()), not from its transaction's start (now()): a message sent late in a
# long transaction would be expired before anyone could read it.
STORE = f"""
WITH stored AS (
    INSERT INTO {TABLE} (body, expires_at)
    VALUES (%s, clock_timestamp() + make_interval(secs => %s)) RETURNING id
)
SELECT pg_notify(%s, '{STORED}' || stored.id || %s) FROM stored
"""

# Removes up to %s expired rows and counts them (SKIP LOCKED: sweeping processes never wait
# for each other).
SWEEP = f"""
WITH swept AS (
    DELETE FROM {TABLE} WHERE id IN (
        SELECT id FROM {TABLE} WHERE expires_at < now() LIMIT %s FOR UPDATE SKIP LOCKED
    ) RETURNING 1
)
SELECT count(*) FROM swept
"""

# A normal channel's message: a row of its channel, unless the channel holds %s unexpired
# messages (the same number twice); a NOTIFY wakes its receivers. No row: the channel is full.
QUEUE = f"""
WITH stored AS (
    INSERT INTO {TABLE} (channel, body, expires_at)
    SELECT %s, %s, clock_timestamp() + make_interval(secs => %s)
    WHERE (
        SELECT count(*) FROM (
            SELECT 1 FROM {TABLE}
            WHERE channel = %s AND expires_at >= clock_timestamp() LIMIT %s
        ) AS queued
    ) < %s
    RETURNING id
)
SELECT pg_notify(%s, '') FROM stored
"""

# Takes the oldest unexpired message of a normal channel: one receiver gets each.
CLAIM = f"""
DELETE FROM {TABLE} WHERE id = (
    SELECT id FROM {TABLE} WHERE channel = %s AND expires_at >= now()
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
) RETURNING id::text, body, expires_at::text
"""

# Puts a claimed message back as it was, for a receiver that was cancelled meanwhile.
RESTORE = f"""
WITH restored AS (
    INSERT INTO {TABLE} (id, channel, body, expires_at)
    VALUES (%s::bigint, %s, %s, %s::timestamptz) RETURNING id
)
SELECT pg_notify(%s, '') FROM restored
"""

# A message for one recipient (a specific channel) goes once it is read.
TAKE = f"DELETE FROM {TABLE} WHERE id = %s RETURNING body"
# A group's or normal channel's message is read by every process that wants it.
READ = f"SELECT body FROM {TABLE} WHERE id = %s AND expires_at >= now()"
FLUSH = f"DELETE FROM {TABLE}"
