"""The PL/pgSQL templates of ``publish_changes`` triggers' bodies, filled in by ``Publication``.
What they render is frozen into migrations: a change here makes ``makemigrations`` rewrite
every trigger.
"""

from __future__ import annotations

import re

# Durable: one outbox row with every key (no size limit), and the wake-up
# notification that notify(..., durable=True) sends (payload: the channel).
DURABLE = """
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

# Durable with ordering="pk": one outbox row per changed row, in the order of
# their keys; the same payload as a one-row statement's. In eager mode their
# ids go to the eager table, in order. One wake-up per statement.
INSERT_PER_ROW = """INSERT INTO {outbox} (channel, payload, ordering_key,
        sender_pid, state, attempts, created_at, available_at, last_error)
    SELECT {channel}, head || k || '],"count":1' || extra || '}}', ok,
        pg_backend_pid(), 'pending', 0, now(), now(), ''
    FROM (SELECT {key} AS k, {ordering_key} AS ok FROM {rows} ORDER BY t.{pk}) AS keys"""

DURABLE_PER_ROW = """
IF eager THEN
    WITH stored AS ({insert}
        RETURNING id)
    INSERT INTO pg_temp.{eager_table} (outbox_id) SELECT id FROM stored ORDER BY id;
ELSE
    {insert};
END IF;
GET DIAGNOSTICS total = ROW_COUNT;
IF total = 0 THEN RETURN NULL; END IF;
PERFORM pg_notify({wakeup}, {channel});
RETURN NULL;"""

# Bytes left for keys in one notification; a context that leaves too little
# room is replaced by null rather than fail the write.
ROOM = """
budget := {limit} - octet_length(head) - octet_length(extra) - widest;
IF budget <= widest AND ctx IS NOT NULL THEN
    extra := ',"context":null';
    budget := {limit} - octet_length(head) - octet_length(extra) - widest;
END IF;"""

# Integer and UUID keys: their JSON has no comma and a known widest size, so
# one aggregate reads the changed rows once, and the joined keys are cut at
# commas. bytea, unlike text, is indexed without scanning from the start.
CUT_AT_COMMAS = """
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
NUMBER_BY_RUNNING_TOTAL = """
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
    by the same payload's INSERT into the eager table, in eager mode only.

    The payload expression is repeated rather than kept in a variable, so that
    outside eager mode the trigger does exactly what it did before: its only
    extra work is reading :data:`EAGER_SETTING` once per statement.
    """
    return re.sub(
        r"^( *)PERFORM pg_notify\(\{channel\}, (.*?)\);$",
        lambda match: (
            f"{match[0]}\n{match[1]}IF eager THEN INSERT INTO pg_temp.{{eager_table}} "
            f"(channel, payload) VALUES ({{channel}}, {match[2]}); END IF;"
        ),
        template,
        flags=re.MULTILINE | re.DOTALL,
    )


CUT_AT_COMMAS = _also_eager(CUT_AT_COMMAS)
NUMBER_BY_RUNNING_TOTAL = _also_eager(NUMBER_BY_RUNNING_TOTAL)
