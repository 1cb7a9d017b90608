"""What one model's ``publish_changes`` triggers publish (:class:`Publication`), as PL/pgSQL.
Its text is frozen into migrations, so it may read only names that stay valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import models

from django_pgpubsub.db.sql import OUTBOX_TABLE, WAKEUP_CHANNEL
from django_pgpubsub.publishing.bodies import (
    CUT_AT_COMMAS,
    DURABLE,
    DURABLE_PER_ROW,
    INSERT_PER_ROW,
    NUMBER_BY_RUNNING_TOTAL,
    ROOM,
)
from django_pgpubsub.publishing.context import CONTEXT_SETTING
from django_pgpubsub.publishing.notify import ORDERING_KEY_MAX_BYTES
from django_pgpubsub.vocabulary.payload import MAX_PAYLOAD_BYTES

OLD_ROWS = "old_rows"
NEW_ROWS = "new_rows"

EAGER_SETTING = "pgpubsub.eager"
"""While ``'on'`` (set by :func:`django_pgpubsub.testing.eager`), the triggers
also write what they publish into :data:`EAGER_TABLE`, read back at commit."""

EAGER_TABLE = "pgpubsub_eager"
"""The session's temporary table of eager events (schema ``pg_temp``)."""


def sql_text(value: str) -> str:
    """``value`` as a SQL string expression that is safe inside a ``$$`` body.

    Quotes are doubled; a ``$`` (which could end the dollar-quoted function
    body) is spelled ``chr(36)``.
    """
    pieces = ["'" + piece.replace("'", "''") + "'" for piece in value.split("$")]
    return " || chr(36) || ".join(pieces)


# Bytes of the JSON text of the widest key of each primary-key type, so that
# the common keys need no extra pass to measure; other types are measured.
_WIDEST = {
    "SmallAutoField": 6,
    "SmallIntegerField": 6,
    "PositiveSmallIntegerField": 6,
    "AutoField": 11,
    "IntegerField": 11,
    "PositiveIntegerField": 11,
    "BigAutoField": 20,
    "BigIntegerField": 20,
    "PositiveBigIntegerField": 20,
    "UUIDField": 38,
}
# What a piece's payload may hold besides its keys: '],"count":', ',"part":',
# ',"parts":' and '}' (28 bytes) and three numbers of at most 20 digits.
_NUMBERS_AND_PUNCTUATION = 88


@dataclass(frozen=True)
class Publication:
    """What one model's triggers publish; renders each trigger's function body."""

    model: type[models.Model]
    channel: str
    events: frozenset[str]
    changed: tuple[str, ...] | None
    durable: bool
    ordering: str | None = None
    """``"pk"``: one outbox row per changed row, keyed by the row (durable only)."""

    @property
    def label(self) -> str:
        concrete = self.model._meta.concrete_model or self.model
        return concrete._meta.label_lower

    def transition_tables(self, event: str) -> tuple[str | None, str | None]:
        """Names of the OLD and NEW transition tables ``event``'s trigger needs.

        Each one declared costs PostgreSQL a copy of every changed row.
        """
        if event == "created":
            return None, NEW_ROWS
        if event == "deleted":
            return OLD_ROWS, None
        return (OLD_ROWS if self.changed else None), NEW_ROWS

    def rows(self, event: str) -> str:
        """The FROM clause of the changed rows, aliased ``t``."""
        if event == "created":
            return f"{NEW_ROWS} AS t"
        if event == "deleted":
            return f"{OLD_ROWS} AS t"
        if not self.changed:
            return f"{NEW_ROWS} AS t"
        opts = self.model._meta
        pk = _column(opts.pk)
        differs = " OR ".join(
            f"o.{column} IS DISTINCT FROM t.{column}"
            for column in (_column(opts.get_field(name)) for name in self.changed)
        )
        # Rows whose primary key itself changed have no partner and are left
        # out: the transition tables can only be matched on the key.
        return f"{NEW_ROWS} AS t JOIN {OLD_ROWS} AS o ON o.{pk} = t.{pk} WHERE ({differs})"

    def _key(self) -> tuple[str, int | None]:
        """The key's JSON text as SQL of ``t``, and its widest size when known."""
        field = self.model._meta.pk
        column = f"t.{_column(field)}"
        while field is not None and field.is_relation:  # a parent link (inheritance)
            field = field.target_field
        kind = field.get_internal_type() if field is not None else ""
        widest = _WIDEST.get(kind)
        if kind == "UUIDField":
            return f"'\"' || {column}::text || '\"'", widest
        if widest is not None:
            return f"{column}::text", widest
        return f"to_json({column})::text", None

    def _ordering_key(self) -> str:
        """The ordering key of row ``t`` as SQL: ``"<app_label.model_name>:<pk>"``.

        A key whose text would pass :data:`ORDERING_KEY_MAX_BYTES` (a long
        text primary key) is named by its MD5 instead, ``"<label>:md5:<hex>"``,
        rather than fail the write: two keys sharing a digest would only share
        one line.
        """
        prefix = f"{self.label}:"
        pk = f"t.{_column(self.model._meta.pk)}::text"
        room = ORDERING_KEY_MAX_BYTES - len(prefix.encode())
        _, widest = self._key()
        if widest is not None and widest <= room:
            return f"{sql_text(prefix)} || {pk}"
        return (
            f"CASE WHEN octet_length({pk}) <= {room} THEN {sql_text(prefix)} || {pk} "
            f"ELSE {sql_text(prefix + 'md5:')} || md5({pk}) END"
        )

    def function_body(self, event: str) -> str:
        """The PL/pgSQL between BEGIN and END of ``event``'s trigger function."""
        key, widest = self._key()
        keys = f"SELECT {key} AS k FROM {self.rows(event)}"
        head = json.dumps(
            {"event": event, "model": self.label}, ensure_ascii=False, separators=(",", ":")
        )
        start = f"""
head := {sql_text(head[:-1] + ',"pks":[')};
ctx := NULLIF(current_setting('{CONTEXT_SETTING}', true), '');
extra := COALESCE(',"context":' || ctx, '');
eager := current_setting('{EAGER_SETTING}', true) = 'on';"""
        channel = sql_text(self.channel)
        if self.ordering == "pk":
            return start + DURABLE_PER_ROW.format(
                insert=INSERT_PER_ROW.format(
                    outbox=OUTBOX_TABLE,
                    channel=channel,
                    key=key,
                    ordering_key=self._ordering_key(),
                    rows=self.rows(event),
                    pk=_column(self.model._meta.pk),
                ),
                channel=channel,
                wakeup=sql_text(WAKEUP_CHANNEL),
                eager_table=EAGER_TABLE,
            )
        if self.durable:
            return start + DURABLE.format(
                keys=keys,
                channel=channel,
                outbox=OUTBOX_TABLE,
                wakeup=sql_text(WAKEUP_CHANNEL),
                eager_table=EAGER_TABLE,
            )
        room = ROOM.format(limit=MAX_PAYLOAD_BYTES - _NUMBERS_AND_PUNCTUATION)
        if widest is not None:
            return start + CUT_AT_COMMAS.format(
                keys=keys, channel=channel, room=room, widest=widest, eager_table=EAGER_TABLE
            )
        return start + NUMBER_BY_RUNNING_TOTAL.format(
            keys=keys,
            channel=channel,
            room=room,
            without_keys=sql_text(head[:-1] + ',"pks":null,"count":'),
            eager_table=EAGER_TABLE,
        )

    def declare(self) -> list[tuple[str, str]]:
        """The variables the function bodies use."""
        return [
            ("total", "bigint"),
            ("widest", "integer"),
            ("joined", "text"),
            ("bytes", "bytea"),
            ("ctx", "text"),
            ("head", "text"),
            ("extra", "text"),
            ("budget", "bigint"),
            ("pos", "integer"),
            ("stop", "integer"),
            ("cuts", "integer[]"),
            ("pieces", "text[]"),
            ("parts", "integer"),
            ("eager", "boolean"),
        ]


def _column(field: object) -> str:
    """The quoted column of a concrete field."""
    name = getattr(field, "column", None)
    if not isinstance(name, str):
        raise ImproperlyConfigured(f"{field!r} has no column to publish.")
    if "$" in name:
        raise ImproperlyConfigured(
            f"Column {name!r} has a '$', which publish_changes triggers cannot name."
        )
    return '"' + name.replace('"', '""') + '"'
