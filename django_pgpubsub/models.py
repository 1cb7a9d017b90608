"""The outbox table behind durable events (``notify(..., durable=True)``), and its
maintenance: counts, retry, purge and release, on ``OutboxEvent.objects``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import connections, models, transaction
from django.db.models import Count, Q

from django_pgpubsub import conf
from django_pgpubsub.db.sql import BLOCKED_KEYS_SQL, OUTBOX_TABLE, WAKEUP_CHANNEL
from django_pgpubsub.vocabulary.channel_names import validate_channels

WAITING = ("pending", "running")


class OutboxQuerySet(models.QuerySet["OutboxEvent"]):
    """Maintenance of the outbox; each operation works on the queryset's rows.

    ``OutboxEvent.objects.using("other").filter(channel="mail").retry()``
    narrows it to one database and channel.
    """

    def for_channels(self, channels: Iterable[str]) -> OutboxQuerySet:
        """The events of these channels.

        Raises:
            InvalidChannel: ``channels`` is a single ``str``, or a name is unusable.
        """
        return self.filter(channel__in=validate_channels(channels))  # type: ignore[no-any-return]

    def counts(self) -> list[tuple[str, str, int]]:
        """``(channel, state, count)``, ordered by channel and state."""
        rows = (
            self.values_list("channel", "state")
            .annotate(count=Count("id"))
            .order_by("channel", "state")
        )
        return [(channel, state, count) for channel, state, count in rows]

    def blocked_keys(self) -> tuple[int, float | None]:
        """Ordering keys held back by a failed attempt, in the whole outbox of
        this queryset's database: their count, and the age in seconds of the
        oldest event waiting behind one (None when no key is blocked).

        A key is blocked while its failed event waits for its retry, and, with
        ``ORDERING_ON_DEAD_LETTER = "block"``, while it stays failed.
        """
        with connections[self.db].cursor() as cursor:
            cursor.execute(BLOCKED_KEYS_SQL, {"blockers": conf.ordering_blocker_states()})
            count, oldest = cursor.fetchone()
        return int(count), None if oldest is None else float(oldest)

    def running(self) -> OutboxQuerySet:
        """Events a listener holds now, oldest claim first."""
        running = self.filter(state=OutboxEvent.State.RUNNING)
        return running.order_by("claimed_at", "id")  # type: ignore[no-any-return]

    def retry(self) -> int:
        """Make the failed events among these pending again, with a fresh set of
        attempts, and wake the listeners of their channels.

        An event whose idempotency key is taken by a waiting event stays failed.

        Returns:
            How many events will be retried.
        """
        alias = self.db
        with transaction.atomic(using=alias):
            waiting_keys = OutboxEvent.objects.using(alias).filter(
                state__in=WAITING, key__isnull=False
            )
            failed = self.filter(state=OutboxEvent.State.FAILED).exclude(
                key__in=waiting_keys.values("key")
            )
            # One retry per key: the lowest id wins, the others stay failed.
            keyed = failed.filter(key__isnull=False).order_by("key", "id").distinct("key")
            chosen = failed.filter(Q(key__isnull=True) | Q(id__in=keyed.values("id")))
            woken = sorted(set(chosen.values_list("channel", flat=True)))
            # Not known to wait behind anything (a hint; the claim checks).
            count = chosen.update(
                state=OutboxEvent.State.PENDING,
                attempts=0,
                available_at=_now(alias),
                behind=False,
            )
            _wake(alias, woken)
        return int(count)

    def purge(self, older_than: timedelta) -> int:
        """Delete the failed events among these created more than ``older_than`` ago.

        Returns:
            How many were deleted.
        """
        cutoff = _now(self.db) - older_than
        deleted, _ = self.filter(state=OutboxEvent.State.FAILED, created_at__lt=cutoff).delete()
        return int(deleted)

    def release(self) -> int:
        """Hand the running events among these back, as pending, and wake listeners.

        For a claim that is stuck (its listener hangs): the event is claimed
        again at once, without waiting for ``DURABLE_LEASE``. An attempt that
        had started keeps its count. If its listener is in fact alive, its
        completion finds the claim gone and rolls its writes back.

        Returns:
            How many events were released.
        """
        alias = self.db
        with transaction.atomic(using=alias):
            running = self.filter(state=OutboxEvent.State.RUNNING)
            woken = sorted(set(running.values_list("channel", flat=True)))
            count = running.update(
                state=OutboxEvent.State.PENDING,
                claim_token=None,
                claimed_pid=None,
                claimed_by=None,
                claimed_at=None,
                lease_expires_at=None,
                started_at=None,
                holder_key=None,
            )
            _wake(alias, woken)
        return int(count)


def _now(using: str) -> datetime:
    """The database's clock: rows are stamped with now() there, not in Python."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT now()")
        now: datetime = cursor.fetchone()[0]
        return now


def _wake(using: str, channels: list[str]) -> None:
    with connections[using].cursor() as cursor:
        for channel in channels:
            cursor.execute("SELECT pg_notify(%s, %s)", (WAKEUP_CHANNEL, channel))


OutboxManager = models.Manager.from_queryset(OutboxQuerySet)


class OutboxEvent(models.Model):
    """A durable event: stored in the sender's transaction, deleted once handled.

    Rows only exist while an event waits for a listener, is being handled
    (``running``), is waiting for a retry, or has failed every attempt.
    """

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        FAILED = "failed", "failed"

    channel = models.CharField(max_length=63)
    payload = models.TextField(blank=True)
    # NULL, not "": events without a key must never collide on the unique index;
    # and writers that name only the columns of 0001 (triggers) leave it NULL.
    key = models.TextField(  # noqa: DJ001
        null=True, blank=True, help_text="Idempotency key: unique among waiting events."
    )
    ordering_key = models.TextField(  # noqa: DJ001 - NULL: no order
        null=True,
        blank=True,
        help_text="Events with the same ordering key run one at a time, in id order.",
    )
    # Beside the payload, never in it: NULL unless the sender traced it.
    headers = models.JSONField(
        null=True,
        blank=True,
        help_text="Trace context of the sender (W3C traceparent, tracestate).",
    )
    sender_pid = models.IntegerField(help_text="Backend process id of the sender.")
    state = models.CharField(max_length=7, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts started so far.")
    created_at = models.DateTimeField()
    available_at = models.DateTimeField(help_text="Not handled before this time.")
    last_error = models.TextField(blank=True, help_text="Traceback of the last failure.")
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    claimed_pid = models.IntegerField(
        null=True, blank=True, help_text="Backend process id of the listener holding it."
    )
    claimed_by = models.TextField(  # noqa: DJ001 - NULL: not claimed
        null=True, blank=True, help_text="application_name of the listener holding it."
    )
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="Held since (the claim, or the start of its attempt)."
    )
    lease_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Claimed again by another listener after this time."
    )
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When its running attempt started."
    )
    holder_key = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="Advisory lock key held by the claiming listener while it lives.",
    )
    alone = models.BooleanField(
        null=True,
        blank=True,
        editable=False,
        help_text=(
            "False while run in a group of events; true once such a group did "
            "not finish: then run alone until handled."
        ),
    )
    # A hint kept by the outbox's triggers, never trusted alone.
    behind = models.BooleanField(
        default=False,
        editable=False,
        help_text="Stored behind an earlier event of its ordering key (a hint).",
    )

    objects = OutboxManager()

    class Meta:
        db_table = OUTBOX_TABLE
        verbose_name = "durable event"
        indexes = (
            # What listeners claim: pending rows of their channels, oldest first.
            # available_at is included so that poll mode's probe reads the index only.
            models.Index(
                fields=["channel", "id"],
                include=["available_at"],
                condition=Q(state="pending"),
                name="pgpubsub_outbox_pending",
            ),
            # What the periodic recovery reads: the few rows held by listeners.
            models.Index(
                fields=["id"], condition=Q(state="running"), name="pgpubsub_outbox_running"
            ),
            # What health checks and metrics count: the few failed rows, by channel.
            models.Index(
                fields=["channel"], condition=Q(state="failed"), name="pgpubsub_outbox_failed"
            ),
            # Ordering keys, on keyed rows only: is an earlier
            # event of the key waiting (the claim's probe, index-only)...
            models.Index(
                fields=["ordering_key", "id"],
                include=["state"],
                condition=Q(ordering_key__isnull=False),
                name="pgpubsub_outbox_ordering",
            ),
            # ... is one of the key running ...
            models.Index(
                fields=["ordering_key"],
                condition=Q(ordering_key__isnull=False, state="running"),
                name="pgpubsub_outbox_key_running",
            ),
            # ... and which keys are blocked by a failed attempt (status, metrics).
            models.Index(
                fields=["ordering_key", "id"],
                condition=Q(
                    ordering_key__isnull=False, attempts__gt=0, state__in=("pending", "failed")
                ),
                name="pgpubsub_outbox_key_retrying",
            ),
            # What claims read, the pending rows not known to
            # wait behind their key's head; and the keys that have such rows.
            models.Index(
                fields=["channel", "id"],
                include=["available_at"],
                condition=Q(state="pending", behind=False),
                name="pgpubsub_outbox_heads",
            ),
            models.Index(
                fields=["ordering_key", "id"],
                condition=Q(behind=True),
                name="pgpubsub_outbox_behind",
            ),
        )
        constraints = (
            models.UniqueConstraint(
                fields=["key"],
                condition=Q(state__in=WAITING),
                name="pgpubsub_outbox_waiting_key",
            ),
        )

    def __str__(self) -> str:
        return f"{self.channel} #{self.pk} ({self.state}, {self.attempts} attempt(s))"

    @property
    def holder(self) -> str:
        """Who holds a running event: ``pid 123 (application_name)``; empty otherwise."""
        if self.claimed_pid is None:
            return ""
        return f"pid {self.claimed_pid}" + (f" ({self.claimed_by})" if self.claimed_by else "")


class LayerMessage(models.Model):
    """A Channels layer message kept in PostgreSQL: a normal channel's, or one
    too large for a NOTIFY payload.

    A normal channel's row (``channel`` set) goes when one receiver takes it;
    a large message's NOTIFY carries its id, and its row goes once its one
    recipient read it. Either goes after the layer's ``expiry`` (removed by the
    listening layers' periodic sweep).
    """

    channel = models.CharField(  # noqa: DJ001 - NULL: not a normal channel's
        max_length=100, null=True, blank=True, help_text="The normal channel it waits in."
    )
    body = models.TextField(help_text="The encoded message and its destination.")
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "django_pgpubsub_layer_message"
        verbose_name = "channel layer message"
        indexes = (
            models.Index(
                fields=["channel", "id"],
                name="pgpubsub_layer_queue_idx",
                condition=models.Q(channel__isnull=False),
            ),
        )

    def __str__(self) -> str:
        return f"channel layer message {self.pk}"
