"""What every attempt at a durable event shares: the claim's identity, the claimed rows, the
retry delay, and the refusal of a transaction a handler marked for rollback.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from django.db.backends.base.base import BaseDatabaseWrapper

from django_pgpubsub import conf
from django_pgpubsub.db.reconnect import backoff
from django_pgpubsub.vocabulary.handlers import Handler, handler_name
from django_pgpubsub.vocabulary.observer import Observer

logger = logging.getLogger("django_pgpubsub.durable")


class RollbackRequested(Exception):
    """A handler left its transaction marked for rollback (``needs_rollback``)."""


class Claimed(NamedTuple):
    """One claimed row, as the claim statement returns it."""

    id: int
    channel: str
    sender_pid: int
    attempts: int  # the first row's attempt started with the claim
    payload: str | None  # the first row's only: the others' come when started
    ordering_key: str | None = None
    alone: bool | None = None  # run in a group of its own (see claim_sql.RECOVER_SQL)


class Holder(NamedTuple):
    """What every statement of one claim names: where, under which token and lease."""

    using: str
    token: str
    lease: float
    observer: Observer
    # Eager mode: a failed attempt is due again at once, not after its backoff.
    retry_at_once: bool = False

    def params(self, **values: Any) -> dict[str, Any]:
        """The statements' parameters: the token, the lease, and ``values``."""
        return {"token": self.token, "lease": self.lease, **values}


def sanitize(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL bytes and lone surrogates escaped."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def retry_delay(attempt: int) -> float:
    """Seconds before the retry that follows failed attempt number ``attempt`` (1, 2...)."""
    return backoff(conf.durable_retry_delay(), conf.durable_retry_max_delay(), attempt)


# libpq's PQTRANS_INERROR, in both drivers' connection.info.transaction_status.
_IN_ERROR = 3


def aborted(wrapper: BaseDatabaseWrapper) -> bool:
    """Whether the server refuses the transaction (an error that a handler caught)."""
    raw = wrapper.connection
    return raw is not None and raw.info.transaction_status == _IN_ERROR


def refuse_rollback(function: Handler) -> None:
    raise RollbackRequested(
        f"Handler {handler_name(function)} left its transaction marked for rollback "
        "(transaction.set_rollback(True), or a database error it caught): its writes "
        "are rolled back and the attempt counts as failed."
    )
