"""PgBouncer in transaction pooling mode in front of the run's PostgreSQL, and
database aliases under other roles: the production shapes of the test bed.

``PgBouncer(upstream_url, users)`` starts Debian's ``pgbouncer`` on a free
loopback port with ``pool_mode = transaction`` and server connections that
live a second (``server_lifetime``, ``server_idle_timeout``), so that a
pooled session's pid means nothing, as in production. Its files live in a
fresh world-readable temporary folder (a CI checkout under /root is private);
as root it runs as ``nobody``, since pgbouncer refuses to run as root.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connections

from scripts.pgtemp import UNPRIVILEGED_USER, free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
ROLE_PASSWORD = "worker"


class PgBouncer:
    """A pgbouncer process in transaction pooling mode; a context manager.

    Args:
        upstream_url: The PostgreSQL server it pools (its host and port).
        users: The roles that may connect (``auth_type = trust`` still needs
            them in its user list).
    """

    def __init__(self, upstream_url: str, users: list[str]) -> None:
        upstream = urlsplit(upstream_url)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        os.chmod(self.root, 0o755)
        self.logfile = self.root / "pgbouncer.log"
        userlist = "".join(f'"{user}" ""\n' for user in users)
        (self.root / "userlist.txt").write_text(userlist)
        config = f"""
[databases]
* = host={upstream.hostname or "127.0.0.1"} port={upstream.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root / "userlist.txt"}
pool_mode = transaction
server_lifetime = 1
server_idle_timeout = 1
max_client_conn = 500
default_pool_size = 40
ignore_startup_parameters = extra_float_digits,options
logfile = {self.logfile}
"""
        (self.root / "pgbouncer.ini").write_text(config)
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = UNPRIVILEGED_USER
            account = pwd.getpwnam(self._user)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        """Start pgbouncer; return once it accepts connections."""
        self.process = subprocess.Popen(
            [PGBOUNCER, str(self.root / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            user=self._user,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            time.sleep(0.05)
        log = self.logfile.read_text() if self.logfile.exists() else "(no log)"
        self.stop()
        raise RuntimeError(f"pgbouncer did not start:\n{log}")

    def stop(self) -> None:
        """Stop pgbouncer and delete its files."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def create_role(role: str) -> None:
    """Create ``role`` (LOGIN, no superuser, no ``pg_read_all_stats``) if it does
    not exist, and grant it what a listener needs on the outbox of the test
    database: the table, its sequence; functions are executable by all."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if not cursor.fetchone():
            cursor.execute(
                f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                f"PASSWORD '{ROLE_PASSWORD}'"
            )
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON django_pgpubsub_outbox TO {role}")
        cursor.execute(f"GRANT USAGE ON SEQUENCE django_pgpubsub_outbox_id_seq TO {role}")


@contextlib.contextmanager
def database_alias(alias: str, **changes: Any) -> Iterator[str]:
    """A ``DATABASES`` alias for the test database, with ``changes`` (``USER``,
    ``HOST``, ``PORT``...), for the life of the block.

    Register it before the tests that use it set up (e.g. in a module-scoped
    fixture), and name it in their ``django_db(databases=...)``.
    """
    entry = {**copy.deepcopy(connections["default"].settings_dict), **changes}
    entry["ATOMIC_REQUESTS"] = False
    entry["CONN_MAX_AGE"] = 0
    # A mirror: a test that names the alias in its databases neither creates
    # nor flushes it (the role may not).
    entry["TEST"] = {**entry["TEST"], "MIRROR": "default"}
    settings.DATABASES[alias] = entry
    connections.settings[alias] = entry
    try:
        yield alias
    finally:
        with contextlib.suppress(Exception):
            connections[alias].close()
        with contextlib.suppress(AttributeError):
            del connections[alias]
        connections.settings.pop(alias, None)
        settings.DATABASES.pop(alias, None)
