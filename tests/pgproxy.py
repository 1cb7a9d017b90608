"""Loopback TCP proxies to PostgreSQL: :class:`Proxy` forwards both ways;
:class:`NotificationDroppingProxy` drops notifications, what a transaction
pooler does to a client whose LISTEN ran on another server connection
(queries pass; NotificationResponse ('A') messages do not)."""

from __future__ import annotations

import contextlib
import socket
import threading


class Proxy:
    """Forwards 127.0.0.1:``port`` to ``(host, port)``, both ways; subclasses
    change what passes from the server (:meth:`_from_server`)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._from_server, args=(upstream, client), daemon=True).start()

    def _forward(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _from_server(self, server: socket.socket, client: socket.socket) -> None:
        self._forward(server, client)


class NotificationDroppingProxy(Proxy):
    """Drops notifications while ``drop``.

    Clients must connect with ``sslmode=disable`` and ``gssencmode=disable``,
    so that every message the server sends is framed (type byte, length).
    """

    def __init__(self, host: str, port: int) -> None:
        self.drop = True
        self.dropped = 0
        super().__init__(host, port)

    def _from_server(self, server: socket.socket, client: socket.socket) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                pending += data
                out = bytearray()
                while len(pending) >= 5:
                    end = 1 + int.from_bytes(pending[1:5], "big")
                    if len(pending) < end:
                        break
                    message, pending = pending[:end], pending[end:]
                    if message[:1] == b"A" and self.drop:
                        self.dropped += 1
                    else:
                        out += message
                client.sendall(out)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
