"""Helpers shared by the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from django.core.management import call_command
from django.db import connections

from django_pgpubsub import Event, PubSub, Registry
from django_pgpubsub.db.waits import HasFileno, wait_readable
from django_pgpubsub.listener.loop import Listener


def collect(pubsub: PubSub, count: int, timeout: float = 10.0) -> list[Event]:
    """Read ``count`` events, failing the test if they do not come in time."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        event = pubsub.get_event()
        if event is not None:
            events.append(event)
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got {len(events)} of {count} events: {events[-3:]}")
        wait_readable(pubsub, remaining)
    return events


def in_socket(fileobj: HasFileno, marker: bytes) -> bool:
    """True once ``marker`` is in the socket's receive buffer (peeked, not read)."""
    sock = socket.socket(fileno=fileobj.fileno())
    try:
        try:
            return marker in sock.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
    finally:
        sock.detach()  # the driver owns the descriptor


MARKER_CHANNEL = "test.nothing_arrives"


def nothing_arrives(pubsub: PubSub, timeout: float = 10.0) -> bool:
    """True when nothing sent (committed) so far reaches ``pubsub``.

    PostgreSQL delivers notifications in commit order, so a marker committed
    now arrives after anything committed before it: the first event is the
    marker exactly when nothing else was on its way. No guessed wait.
    """
    listening = MARKER_CHANNEL in pubsub.channels
    pubsub.listen(MARKER_CHANNEL)
    try:
        pubsub.notify(MARKER_CHANNEL, "marker")
        [first] = collect(pubsub, 1, timeout)
        if first.channel != MARKER_CHANNEL:
            return False
    finally:
        if not listening:
            pubsub.unlisten(MARKER_CHANNEL)
    return True


ROOT = Path(__file__).resolve().parent.parent


def project_files() -> list[Path]:
    """The files of the checkout: tracked by git, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def database_url(settings_dict: dict[str, Any]) -> str:
    """A URL for a Django database settings dict (e.g. the test database's)."""
    user = quote(settings_dict["USER"] or "")
    password = quote(settings_dict["PASSWORD"] or "")
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    host = settings_dict["HOST"] or "localhost"
    port = f":{settings_dict['PORT']}" if settings_dict["PORT"] else ""
    return f"postgresql://{auth}{host}{port}/{quote(settings_dict['NAME'])}"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


class ListenerThread:
    """A :class:`Listener` running in a thread of this process.

    ``connected`` is set on every (re)connection, after the listener's own
    ``on_connect``. The thread closes its Django connections as it ends. As a
    context manager, it stops the listener on exit.
    """

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.connected = threading.Event()
        self._outcome: list[Any] = []
        chained = listener.on_connect

        def on_connect(listener: Listener, reconnected: bool) -> None:
            if chained is not None:
                chained(listener, reconnected)
            self.connected.set()

        listener.on_connect = on_connect
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._outcome.append(self.listener.run())
        except BaseException as exc:
            self._outcome.append(exc)
        finally:
            connections.close_all()

    def wait_connected(self, timeout: float = 10.0) -> ListenerThread:
        assert self.connected.wait(timeout), "the listener did not connect"
        return self

    def result(self, timeout: float = 60.0) -> Any:
        """Wait for ``run()`` to end; return what it returned, or raise what it raised."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the listener still runs after {timeout} s"
        if isinstance(self._outcome[0], BaseException):
            raise self._outcome[0]
        return self._outcome[0]

    def stop(self, timeout: float = 10.0) -> Any:
        """Stop the listener and return its result."""
        self.listener.stop()
        return self.result(timeout)

    def __enter__(self) -> ListenerThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.listener.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the listener did not stop"


def run_listener(handlers: Registry, **kwargs: Any) -> int:
    """Run a Listener in a thread until it has dispatched ``max_events``; return that."""
    return int(ListenerThread(Listener(registry=handlers, **kwargs)).result())


class ManagePy:
    """A ``manage.py`` command running in a subprocess against a database URL.

    ``url`` becomes its ``DATABASE_URL``; ``settings`` defaults to the run's own
    settings module, so that under tests/settings_pgbouncer.py the command's
    ``DATABASE`` goes through the run's PgBouncer (in front of the run's
    server) and its ``LISTENER_DATABASE`` is ``url`` directly.
    """

    def __init__(self, *args: str, url: str, settings: str = "", **extra_env: str) -> None:
        settings = settings or os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings")
        env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1", **extra_env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", *args, f"--settings={settings}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        with stream:
            for line in stream:
                lines.append(line)

    def _finish(self) -> int:
        """After exit: collect the rest of the output, close the pipes."""
        for reader in self._readers:
            reader.join(timeout=10)
        return self.process.wait()

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                self._finish()
                if text in self.output():
                    return True
                raise AssertionError(f"exited {self.process.returncode}:\n{self.output()}")
            return text in self.output()

        wait_until(seen, timeout, f"{text!r} in the output of {self.process.args!r}")

    def wait(self, timeout: float = 30.0) -> int:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s:\n{self.output()}") from None
        return self._finish()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self._finish()


def run_sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a fresh autocommit driver connection; return its rows."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if is_psycopg3:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    import psycopg2

    conn2 = psycopg2.connect(url)
    try:
        conn2.autocommit = True
        with conn2.cursor() as cursor2:
            cursor2.execute(sql, params)
            return cursor2.fetchall() if cursor2.description else []
    finally:
        conn2.close()


def health(*args: str) -> tuple[int, str]:
    """Run ``pubsub_health ARGS`` in-process; return (exit status, stdout)."""
    out = StringIO()
    try:
        call_command("pubsub_health", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()
