"""What NOTIFY costs writers: pgbench transactions with and without it, with 0,
1 and 20 idle listening connections (on another channel).

Every transaction is one autocommit statement (one round trip in every
column): the writer's own INSERT, plus what the library adds to a
transaction in that column:

* plain: nothing;
* notify(): ``pg_notify(channel, payload)``;
* durable, notify wake-up: an outbox row and ``pg_notify`` on the wake-up channel;
* durable, poll wake-up: an outbox row only;
* publish_on_save: ``pg_notify`` of the row as JSON, on the model's channel.

Figures are transactions per second and their ratio to plain in the same
row. pgbench comes from ``PGBENCH`` or Debian's PostgreSQL 15.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from django_pgpubsub import sql

PGBENCH_PATHS = ("/usr/lib/postgresql/15/bin/pgbench", "/usr/lib/postgresql/16/bin/pgbench")
LISTENERS = (0, 1, 20)
CLIENTS = 8

_ROW = "INSERT INTO bench_writes (v) VALUES (:v) RETURNING id, v"
_OUTBOX = (
    f"INSERT INTO {sql.OUTBOX_TABLE} (channel, payload, sender_pid, state, attempts, "
    "created_at, available_at, last_error) SELECT 'bench.writes', "
    "json_build_object('id', id)::text, pg_backend_pid(), 'pending', 0, now(), now(), '' "
    "FROM w RETURNING channel"
)
COLUMNS: dict[str, str] = {
    "plain": f"{_ROW};",
    "notify()": f"WITH w AS ({_ROW}) SELECT pg_notify('bench.writes', v::text) FROM w;",
    "durable, notify": (
        f"WITH w AS ({_ROW}), stored AS ({_OUTBOX}) "
        f"SELECT pg_notify('{sql.WAKEUP_CHANNEL}', channel) FROM stored;"
    ),
    "durable, poll": f"WITH w AS ({_ROW}) {_OUTBOX};",
    "publish_on_save": (
        f"WITH w AS ({_ROW}) SELECT pg_notify('bench.writes', json_build_object("
        "'event', 'created', 'model', 'bench.write', 'pk', id, "
        "'fields', json_build_object('v', v))::text) FROM w;"
    ),
}


@dataclass
class Cell:
    listeners: int
    column: str
    tps: float


def pgbench() -> str | None:
    """The pgbench program, or None."""
    configured = os.environ.get("PGBENCH")
    if configured:
        return configured
    for path in PGBENCH_PATHS:
        if Path(path).exists():
            return path
    return shutil.which("pgbench")


def run(url: str, seconds: float) -> list[Cell]:
    """tps of every column with 0, 1 and 20 listening connections."""
    program = pgbench()
    if program is None:
        raise RuntimeError("pgbench not found: set PGBENCH")
    setup = psycopg2.connect(url)
    setup.autocommit = True
    cells = []
    try:
        with setup.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS bench_writes (id bigserial, v int)")
        for listeners in LISTENERS:
            idle = [psycopg2.connect(url) for _ in range(listeners)]
            try:
                for conn in idle:
                    conn.autocommit = True
                    with conn.cursor() as cursor:
                        cursor.execute("LISTEN bench_elsewhere")
                for column, statement in COLUMNS.items():
                    with setup.cursor() as cursor:
                        cursor.execute(f"TRUNCATE bench_writes, {sql.OUTBOX_TABLE}")
                    cells.append(Cell(listeners, column, _tps(program, url, statement, seconds)))
            finally:
                for conn in idle:
                    conn.close()
        with setup.cursor() as cursor:
            cursor.execute(f"DROP TABLE bench_writes; TRUNCATE {sql.OUTBOX_TABLE}")
    finally:
        setup.close()
    return cells


def _tps(program: str, url: str, statement: str, seconds: float) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write("\\set v random(1, 1000000)\n" + statement + "\n")
        script.flush()
        command = [program, "-n", "-c", str(CLIENTS), "-j", "2", "-T", str(max(1, round(seconds)))]
        result = subprocess.run(
            [*command, "-f", script.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
    match = re.search(r"tps = ([\d.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"no tps in pgbench's output:\n{result.stdout}\n{result.stderr}")
    return float(match[1])


def table(cells: list[Cell]) -> str:
    """The writers' table: tps and the ratio to plain, per listening connections."""
    columns = list(COLUMNS)
    lines = [
        "listening  " + "  ".join(f"{c:>22}" for c in columns),
    ]
    for listeners in LISTENERS:
        row = {c.column: c.tps for c in cells if c.listeners == listeners}
        plain = row["plain"]
        parts = [f"{row[c]:>12,.0f} ({row[c] / plain:4.2f}x)" for c in columns]
        lines.append(f"{listeners:>9}  " + "  ".join(f"{p:>22}" for p in parts))
    return "\n".join(lines)
