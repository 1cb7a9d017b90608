"""The HTTP server of ``listen_events --metrics-port``, and its optional dependency."""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

from django.core.exceptions import ImproperlyConfigured

#: Where the metrics server listens unless told otherwise: this host only.
DEFAULT_ADDRESS = "127.0.0.1"

MISSING_EXTRA = (
    "listen_events --metrics-port needs prometheus_client, which is not installed: "
    "pip install 'django-pg-pubsub[metrics]'."
)


def prometheus() -> ModuleType:
    """The ``prometheus_client`` module.

    Raises:
        ImproperlyConfigured: It is not installed (the ``[metrics]`` extra).
    """
    try:
        import prometheus_client  # noqa: PLC0415 - an optional dependency, needed only here
        import prometheus_client.core  # noqa: PLC0415
    except ImportError as exc:
        raise ImproperlyConfigured(MISSING_EXTRA) from exc
    return prometheus_client


class MetricsServer:
    """The HTTP server of :func:`serve`, in its daemon thread."""

    def __init__(self, server: Any) -> None:
        self._server = server

    @property
    def url(self) -> str:
        """``http://ADDRESS:PORT/metrics`` (the actual port, also when 0 was asked)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        """Stop serving, without waiting: the server notices within half a second.

        Waiting would delay the exit of ``listen_events --max-events`` by as much.
        """
        threading.Thread(target=self._stop, name="pgpubsub-metrics-stop", daemon=True).start()

    def _stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(metrics: Any, port: int, address: str = DEFAULT_ADDRESS) -> MetricsServer:
    """Serve ``metrics`` (a collector: a ``ListenerMetrics``) on
    ``http://ADDRESS:PORT/metrics`` from a daemon thread.

    Only these metrics: a registry of its own, so nothing else in the process
    (nor ``PROMETHEUS_MULTIPROC_DIR``) changes what is served. On the loopback
    interface unless ``address`` says otherwise: the metrics name channels
    and handlers, which are nobody else's business.
    """
    client = prometheus()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    server, _thread = client.start_http_server(port, addr=address, registry=registry)
    return MetricsServer(server)
