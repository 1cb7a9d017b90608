"""``publish_context``: who or what made a change, carried by every payload through a context
variable (for ``publish_on_save``) and a transaction-local setting (for the triggers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import connections, transaction

from django_pgpubsub import conf
from django_pgpubsub.exceptions import PayloadTooLarge
from django_pgpubsub.vocabulary.payload import encode_payload

CONTEXT_SETTING = "pgpubsub.context"
"""The PostgreSQL setting the triggers read (JSON text; empty when unset)."""

MAX_CONTEXT_BYTES = 1000
"""Context JSON is limited so that a notification keeps room for its keys."""

SET_SQL = "SELECT set_config(%s, %s, true)"

_current: ContextVar[dict[str, Any] | None] = ContextVar("pgpubsub_context", default=None)


def current_context() -> dict[str, Any] | None:
    """The context of the innermost :func:`publish_context` block, if any."""
    return _current.get()


@contextmanager
def publish_context(**values: Any) -> Iterator[dict[str, Any]]:
    """Add ``"context": {...values}`` to every payload published inside the block.

    It applies to ``publish_changes`` trigger payloads and to
    ``publish_on_save`` payloads. The block runs in ``transaction.atomic()``
    on the ``DATABASE`` setting's connection (a savepoint when a transaction
    is already open), because the database side of the context is
    transaction-local. Nested blocks add to (and may override) the outer
    values, which come back when the inner block ends.

    Args:
        **values: JSON-serialisable values, e.g. ``user=request.user.pk``.

    Yields:
        The context in effect inside the block.

    Raises:
        PayloadTooLarge: The context is more than 1000 bytes of JSON.
        InvalidPayload: A value is not JSON serialisable.
    """
    outer = _current.get()
    context = {**(outer or {}), **values}
    text = encode_payload(context)
    if len(text.encode()) > MAX_CONTEXT_BYTES:
        raise PayloadTooLarge(
            f"publish_context() takes at most {MAX_CONTEXT_BYTES} bytes of JSON, not "
            f"{len(text.encode())}: publish a key (e.g. a user id), not a record."
        )
    using = conf.database()
    connection = connections[using]
    # Inside an open transaction, atomic() makes a savepoint, and a setting
    # made there outlives the block: it is set back when the block ends.
    nested = connection.in_atomic_block
    token = _current.set(context)
    try:
        with transaction.atomic(using=using):
            with connection.cursor() as cursor:
                cursor.execute(SET_SQL, (CONTEXT_SETTING, text))
            yield context
            if nested:
                restored = "" if outer is None else encode_payload(outer)
                with connection.cursor() as cursor:
                    cursor.execute(SET_SQL, (CONTEXT_SETTING, restored))
    finally:
        _current.reset(token)
