"""Payload encoding (with PostgreSQL's size limit) and decoding."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from django_pgpubsub.exceptions import InvalidPayload, PayloadTooLarge

MAX_PAYLOAD_BYTES = 7999
"""PostgreSQL refuses payloads of 8000 bytes; its count includes a NUL."""

_encoder = DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_payload(payload: Any, *, limit_size: bool = True) -> str:
    """Return the text to send for ``payload``.

    Args:
        payload: A ``str`` is sent as is; anything else as compact JSON
            (``DjangoJSONEncoder``, so dates, Decimals and UUIDs work).
        limit_size: Enforce NOTIFY's limit (durable payloads have none).

    Returns:
        The payload text.

    Raises:
        PayloadTooLarge: The text is 8000 bytes or more in UTF-8.
        InvalidPayload: The text has a NUL byte or a lone surrogate (which
            UTF-8 cannot encode), or the value is not JSON serialisable.
    """
    if isinstance(payload, str):
        text = payload
    else:
        try:
            text = _encoder.encode(payload)
        except (TypeError, ValueError) as exc:
            raise InvalidPayload(f"Payload is not JSON serialisable: {exc}") from exc
    if not text.isascii():
        # Only non-ASCII text can hold a lone surrogate, which UTF-8 cannot
        # encode: refused here, not as a UnicodeEncodeError from the driver.
        try:
            size = len(text.encode())
        except UnicodeEncodeError as exc:
            raise InvalidPayload(
                f"Payload cannot be encoded in UTF-8 ({exc.reason} at index {exc.start})."
            ) from None
    else:
        size = len(text)
    if limit_size and size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"Payload is {size} bytes in UTF-8; PostgreSQL's limit is "
            f"{MAX_PAYLOAD_BYTES}. Send a key (e.g. a primary key) and load "
            "the data in the handler."
        )
    if "\x00" in text:
        raise InvalidPayload("Payload contains a NUL byte, which PostgreSQL cannot send.")
    return text


# json's C scanner, without json.loads' layers around it: a listener decodes
# every payload, and this is several times faster for the usual payload.
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def decode_payload(text: str) -> Any:
    """Return ``text`` decoded as JSON, or ``text`` itself when it is not JSON."""
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError):
        pass
    else:
        if end == len(text):
            return value
    # Surrounding whitespace, trailing garbage, or not JSON: json.loads decides.
    try:
        return json.loads(text)
    except ValueError:
        return text
