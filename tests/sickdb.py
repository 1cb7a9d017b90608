"""Sick databases for the bounds of health checks and metrics: a server that
accepts connections and never answers, a proxy that goes silent mid-session,
an outbox locked by another session, and a way to point an alias at them."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.db import connections

from django_pgpubsub import connect
from django_pgpubsub.db.sql import OUTBOX_TABLE
from tests.pgproxy import Proxy

T = TypeVar("T")


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._accepted.append(client)  # held open, never answered

    def close(self) -> None:
        for sock in [self._server, *self._accepted]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class FreezingProxy(Proxy):
    """Forwards 127.0.0.1:``port`` to PostgreSQL until :meth:`freeze`; from then
    on nothing passes, either way, and the connections stay open: a server
    that stopped answering mid-session (no server-side timeout can fire)."""

    def __init__(self, host: str, port: int) -> None:
        self.frozen = threading.Event()
        super().__init__(host, port)

    def freeze(self) -> None:
        self.frozen.set()

    def _forward(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.frozen.is_set():
                    return  # swallowed: the peer waits forever
                sink.sendall(data)


@contextlib.contextmanager
def alias_at(port: int, alias: str = "default") -> Iterator[None]:
    """Point ``alias`` at 127.0.0.1:``port`` (TCP, no SSL) while inside."""
    settings_dict = connections[alias].settings_dict
    saved = {key: settings_dict.get(key) for key in ("HOST", "PORT", "OPTIONS")}
    connections[alias].close()
    settings_dict.update(
        HOST="127.0.0.1",
        PORT=str(port),
        OPTIONS={**(saved["OPTIONS"] or {}), "sslmode": "disable", "gssencmode": "disable"},
    )
    try:
        yield
    finally:
        settings_dict.update(saved)


def server_address(alias: str = "default") -> tuple[str, int]:
    """``(host, port)`` of the test server over TCP, for :class:`FreezingProxy`."""
    settings_dict = connections[alias].settings_dict
    host = settings_dict["HOST"] or "127.0.0.1"
    return ("127.0.0.1" if host.startswith("/") else host), int(settings_dict["PORT"] or 5432)


@contextlib.contextmanager
def locked_outbox(alias: str = "default") -> Iterator[None]:
    """The outbox locked ``IN ACCESS EXCLUSIVE MODE`` by another session while inside."""
    with connect(alias) as locker:
        locker.conn.autocommit = False
        with locker.conn.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {OUTBOX_TABLE} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            locker.conn.rollback()


def finishes(function: Callable[[], T], deadline: float = 60.0) -> T:
    """Call ``function`` in a thread; its result, or AssertionError when it
    has not returned within ``deadline`` seconds (generous: only a hang fails)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, function()))
        except BaseException as exc:  # handed back to the test
            outcome.append((False, exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        raise AssertionError(f"still waiting after {deadline:g} s: it hangs")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]
