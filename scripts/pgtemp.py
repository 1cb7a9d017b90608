"""A throwaway PostgreSQL server on loopback, for the tests, the example and bench.

Nothing here is part of the library. It finds server binaries (``PG_BINDIR``,
else the embedded ``pgserver`` package, else Debian's newest
``/usr/lib/postgresql/*/bin``), makes a cluster in a temporary folder, starts
it on a free loopback port with durability switched off (unless asked for:
``TemporaryPostgres(durable=True)``, as the durable benchmarks do), and
removes it all on stop. As root, the server runs as ``nobody``: PostgreSQL refuses to run as
root.

Used three ways:

* ``ensure_database_url()``: returns ``DATABASE_URL`` when it is set, else
  starts a server for the life of this process and exports its URL, so child
  processes (``manage.py listen_events`` in the tests) share it.
* ``TemporaryPostgres``: a server of one's own, that a test may stop and
  start again.
* ``python scripts/pgtemp.py COMMAND...``: runs the command with
  ``DATABASE_URL`` pointing at a fresh server (or the one already set).
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

UNPRIVILEGED_USER = "nobody"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
}
# Off for the tests' speed, unless a server is made with durable=True: then
# PostgreSQL's defaults (each commit waits for its WAL flush), as production
# runs it, for the benchmarks that must pay what every commit costs there.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def find_bindir() -> Path:
    """Return the folder holding ``initdb`` and ``postgres``."""
    configured = os.environ.get("PG_BINDIR")
    if configured:
        return Path(configured)
    # Located, not imported: importing pgserver has side effects (warnings).
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.origin:
        return Path(spec.origin).parent / "pginstall" / "bin"
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if debian:
        return debian[-1]
    raise SystemExit(
        "No PostgreSQL server binaries found: `pip install pgserver`, "
        "`apt-get install postgresql`, or set PG_BINDIR or DATABASE_URL."
    )


def _world_can_run(path: Path) -> bool:
    folders = [path, *path.parents]
    return all(p.stat().st_mode & stat.S_IXOTH for p in folders)


# A run path relative to the file holding it, as auditwheel writes them
# ("$ORIGIN/../../pgserver.libs"); ELF strings end with NUL, lists with ":".
_ORIGIN_PATH = re.compile(rb"\$ORIGIN((?:/[^\x00:]*)?)")


def _reached_folders(install: Path) -> set[Path]:
    """Folders outside ``install`` that its programs and libraries load from."""
    found = set()
    for path in install.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as file:
            if file.read(4) != b"\x7fELF":
                continue
        for match in _ORIGIN_PATH.finditer(path.read_bytes()):
            folder = (path.parent / match.group(1).decode().lstrip("/")).resolve()
            if folder.is_dir() and not folder.is_relative_to(install):
                found.add(folder)
    return found


def _private_copy(install: Path, destination: Path) -> Path:
    """Copy ``install`` and the folders it loads libraries from into ``destination``.

    Their layout relative to each other is kept, so relative run paths still
    resolve in the copy (pgserver's programs find libpq in ``pgserver.libs``,
    beside the package). Returns the copy of ``install``.
    """
    install = install.resolve()
    folders = [install, *sorted(_reached_folders(install))]
    top = Path(os.path.commonpath(folders))
    for folder in folders:
        shutil.copytree(folder, destination / folder.relative_to(top), symlinks=True)
    return destination / install.relative_to(top)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # The server lives in its own session (so a Ctrl-C meant for the app does
    # not reach it); this makes it shut down if our process dies unannounced.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGQUIT)


class TemporaryPostgres:
    """A PostgreSQL cluster in a temporary folder, started and stopped at will.

    Args:
        bindir: The server binaries' folder (default: :func:`find_bindir`).
        durable: Keep PostgreSQL's default durability (fsync,
            synchronous_commit and full_page_writes on) instead of the fast
            settings.
    """

    def __init__(self, bindir: Path | None = None, *, durable: bool = False) -> None:
        bindir = bindir or find_bindir()
        self.durable = durable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        self.root = Path(tempfile.mkdtemp(prefix="pgpubsub-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "server.log"
        try:
            if os.geteuid() == 0:
                self._user = UNPRIVILEGED_USER
                account = pwd.getpwnam(self._user)
                os.chmod(self.root, 0o700)
                os.chown(self.root, account.pw_uid, account.pw_gid)
                if not _world_can_run(bindir / "postgres"):
                    # e.g. pgserver inside a virtualenv under /root
                    bindir = _private_copy(bindir.parent, self.root / "install") / bindir.name
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.bindir = bindir

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self._user,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"{args[0]} failed:\n{result.stdout}{result.stderr}")

    def clone_standby_of(self, primary: TemporaryPostgres) -> TemporaryPostgres:
        """Make this cluster, not created yet, a streaming hot standby of ``primary``.

        ``start()`` then starts it in recovery: read-only, refusing LISTEN,
        until ``SELECT pg_promote()`` makes it a primary.
        """
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(self.datadir), "--write-recovery-conf", "--no-sync",
        )  # fmt: skip
        return self

    def start(self) -> TemporaryPostgres:
        """Create the cluster on first use, start the server, wait until ready."""
        if not self.datadir.exists():
            self._run(
                "initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
        fast = {} if self.durable else FAST_SETTINGS
        settings = {**SERVER_SETTINGS, **fast, "port": str(self.port)}
        settings["unix_socket_directories"] = str(self.datadir)
        command = [str(self.bindir / "postgres"), "-D", str(self.datadir)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        log = open(self.logfile, "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self._user,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pidfile = self.datadir / "postmaster.pid"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            # The eighth line of postmaster.pid says "ready" once it accepts.
            if pidfile.exists() and "ready" in pidfile.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not start:\n{self.logfile.read_text()}")

    def stop(self) -> None:
        """Stop the server (fast shutdown), keeping the cluster for a restart."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def destroy(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        return self.start_or_destroy()

    def start_or_destroy(self) -> TemporaryPostgres:
        """:meth:`start`, deleting the cluster's folder if it fails."""
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()


def ensure_database_url() -> str:
    """Return ``DATABASE_URL``, starting a server for this process if unset."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    server = TemporaryPostgres().start_or_destroy()
    atexit.register(server.destroy)
    os.environ["DATABASE_URL"] = server.url
    return server.url


def main(argv: list[str]) -> int:
    """Run ``argv`` with ``DATABASE_URL`` set; return its exit code."""
    if not argv:
        print("usage: python scripts/pgtemp.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    ensure_database_url()
    child = subprocess.Popen(argv)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the child too; wait for it to finish shutting down.
            continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
