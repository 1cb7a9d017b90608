"""PgBouncer in transaction pooling mode in front of the run's PostgreSQL: a
production shape of the test bed (tests/roles.py has the other).

``PgBouncer(upstream_url, users)`` starts Debian's ``pgbouncer`` on a free
loopback port with ``pool_mode = transaction`` and server connections that
live a second (``server_lifetime``, ``server_idle_timeout``), so that a
pooled session's pid means nothing, as in production. Its files live in a
fresh world-readable temporary folder (a CI checkout under /root is private);
as root it runs as ``nobody``, since pgbouncer refuses to run as root.

Imports nothing of Django: tests/settings_pgbouncer.py starts one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from scripts.pgtemp import UNPRIVILEGED_USER, free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


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
