"""Exceptions raised by django_pgpubsub; all derive from :class:`PubSubError`."""

from __future__ import annotations

from django.db import ProgrammingError


class PubSubError(Exception):
    """Something went wrong in django_pgpubsub."""


class InvalidChannel(PubSubError, ValueError):
    """The channel name is not a non-empty str of at most 63 UTF-8 bytes without NUL."""


class InvalidPayload(PubSubError, ValueError):
    """The payload cannot be sent: PostgreSQL text cannot hold a NUL byte."""


class PayloadTooLarge(InvalidPayload):
    """The payload is 8000 bytes or more in UTF-8; PostgreSQL's limit is 7999."""


class ConnectionLost(PubSubError):
    """The listener's connection to PostgreSQL was lost; connect again."""


class OutboxMissing(PubSubError, ProgrammingError):
    """The outbox table is not in the database: run ``python manage.py migrate django_pgpubsub``.

    Also a ``django.db.ProgrammingError``, the error it translates: the
    statement that failed aborted the transaction it ran in.
    """
