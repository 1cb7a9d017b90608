"""The PL/pgSQL bodies of ``publish_changes`` triggers, and who publishes what.

One statement-level AFTER trigger per event kind reads its transition table
(``new_rows`` for inserts and updates, ``old_rows`` for deletes) and publishes
``{"event", "model", "pks", "count"}``. Plain events are split into
notifications that each stay under PostgreSQL's 8000-byte limit, numbered by
``part``/``parts``; durable events are one outbox row with no size limit.
Nothing here can make the user's write fail because of the size of a change.

The text rendered here is frozen into the migrations that install the
triggers (django-pgtrigger stores compiled SQL), so it may only read names
that stay valid: the context setting, the outbox table and its wake-up channel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import models

from django_pgpubsub.db.sql import OUTBOX_TABLE, WAKEUP_CHANNEL
from django_pgpubsub.payload import MAX_PAYLOAD_BYTES
from django_pgpubsub.publishing.context import CONTEXT_SETTING

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
        if self.durable:
            return start + _DURABLE.format(
                keys=keys,
                channel=channel,
                outbox=OUTBOX_TABLE,
                wakeup=sql_text(WAKEUP_CHANNEL),
                eager_table=EAGER_TABLE,
            )
        room = _ROOM.format(limit=MAX_PAYLOAD_BYTES - _NUMBERS_AND_PUNCTUATION)
        if widest is not None:
            return start + _CUT_AT_COMMAS.format(
                keys=keys, channel=channel, room=room, widest=widest
            )
        return start + _NUMBER_BY_RUNNING_TOTAL.format(
            keys=keys,
            channel=channel,
            room=room,
            without_keys=sql_text(head[:-1] + ',"pks":null,"count":'),
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


# Durable: one outbox row with every key (no size limit), and the wake-up
# notification that notify(..., durable=True) sends (payload: the channel).
_DURABLE = """
SELECT count(*), string_agg(k, ',') INTO total, joined FROM ({keys}) AS keys;
IF total = 0 THEN RETURN NULL; END IF;
INSERT INTO {outbox}
    (channel, payload, sender_pid, state, attempts, created_at, available_at, last_error)
VALUES ({channel}, head || joined || '],"count":' || total || extra || '}}',
        pg_backend_pid(), 'pending', 0, now(), now(), '');
PERFORM pg_notify({wakeup}, {channel});
IF eager THEN
    INSERT INTO pg_temp.{eager_table} (outbox_id)
    VALUES (currval(pg_get_serial_sequence('{outbox}', 'id')));
END IF;
RETURN NULL;"""

# Bytes left for keys in one notification; a context that leaves too little
# room is replaced by null rather than fail the write.
_ROOM = """
budget := {limit} - octet_length(head) - octet_length(extra) - widest;
IF budget <= widest AND ctx IS NOT NULL THEN
    extra := ',"context":null';
    budget := {limit} - octet_length(head) - octet_length(extra) - widest;
END IF;"""

# Integer and UUID keys: their JSON has no comma and a known widest size, so
# one aggregate reads the changed rows once, and the joined keys are cut at
# commas. bytea, unlike text, is indexed without scanning from the start.
_CUT_AT_COMMAS = """
SELECT count(*), string_agg(k, ',') INTO total, joined FROM ({keys}) AS keys;
IF total = 0 THEN RETURN NULL; END IF;
widest := {widest};{room}
IF octet_length(joined) <= budget THEN
    PERFORM pg_notify({channel}, head || joined || '],"count":' || total || extra || '}}');
    RETURN NULL;
END IF;
bytes := convert_to(joined, 'UTF8');
pos := 1;
cuts := '{{}}';
WHILE pos <= length(bytes) LOOP
    -- The piece from pos ends before the last comma in reach (a key is shorter
    -- than budget, so there is one), or at the end.
    stop := pos + budget;
    IF stop > length(bytes) THEN
        stop := length(bytes) + 1;
    ELSE
        WHILE get_byte(bytes, stop - 1) <> 44 LOOP
            stop := stop - 1;
        END LOOP;
    END IF;
    cuts := cuts || stop;
    pos := stop + 1;
END LOOP;
parts := cardinality(cuts);
pos := 1;
FOR i IN 1..parts LOOP
    PERFORM pg_notify({channel}, head || convert_from(substr(bytes, pos, cuts[i] - pos), 'UTF8')
        || '],"count":' || total || extra || ',"part":' || i || ',"parts":' || parts || '}}');
    pos := cuts[i] + 1;
END LOOP;
RETURN NULL;"""

# Other keys (text...) may hold commas and be of any size: they are measured,
# then a running byte count numbers the pieces. A piece holds the keys whose
# running total falls in its window, so it passes budget by less than one key
# (widest bytes), which the budget leaves room for.
_NUMBER_BY_RUNNING_TOTAL = """
SELECT max(octet_length(k)) INTO widest FROM ({keys}) AS keys;
IF widest IS NULL THEN RETURN NULL; END IF;{room}
IF budget <= widest THEN
    -- Not even one key fits: say so, without keys, rather than fail the write.
    SELECT count(*) INTO total FROM ({keys}) AS keys;
    PERFORM pg_notify({channel}, {without_keys} || total || extra || ',"truncated":true}}');
    RETURN NULL;
END IF;
SELECT array_agg(piece ORDER BY n), sum(counted) INTO pieces, total FROM (
    SELECT n, string_agg(k, ',') AS piece, count(*) AS counted FROM (
        SELECT k, (sum(octet_length(k) + 1) OVER (ROWS UNBOUNDED PRECEDING) - 1) / budget AS n
        FROM ({keys}) AS keys
    ) AS numbered GROUP BY n
) AS grouped;
parts := cardinality(pieces);
IF parts = 1 THEN
    PERFORM pg_notify({channel}, head || pieces[1] || '],"count":' || total || extra || '}}');
    RETURN NULL;
END IF;
FOR i IN 1..parts LOOP
    PERFORM pg_notify({channel}, head || pieces[i] || '],"count":' || total || extra
        || ',"part":' || i || ',"parts":' || parts || '}}');
END LOOP;
RETURN NULL;"""


def _also_eager(template: str) -> str:
    """``template`` where each ``PERFORM pg_notify({channel}, ...)`` is followed
    by the same payload's INSERT into :data:`EAGER_TABLE`, in eager mode only.

    The payload expression is repeated rather than kept in a variable, so that
    outside eager mode the trigger does exactly what it did before: its only
    extra work is reading :data:`EAGER_SETTING` once per statement.
    """
    return re.sub(
        r"^( *)PERFORM pg_notify\(\{channel\}, (.*?)\);$",
        lambda match: (
            f"{match[0]}\n{match[1]}IF eager THEN INSERT INTO pg_temp.{EAGER_TABLE} "
            f"(channel, payload) VALUES ({{channel}}, {match[2]}); END IF;"
        ),
        template,
        flags=re.MULTILINE | re.DOTALL,
    )


_CUT_AT_COMMAS = _also_eager(_CUT_AT_COMMAS)
_NUMBER_BY_RUNNING_TOTAL = _also_eager(_NUMBER_BY_RUNNING_TOTAL)


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
