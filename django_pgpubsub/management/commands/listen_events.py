"""``manage.py listen_events``: run the registered handlers."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from django_pgpubsub import conf
from django_pgpubsub.db.connection import database_wrapper
from django_pgpubsub.exceptions import ConnectionLost, InvalidChannel
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.listener.shutdown import stop_on_signals
from django_pgpubsub.ops.metrics import DEFAULT_ADDRESS, ListenerMetrics, serve
from django_pgpubsub.vocabulary.handlers import handler_name, registry
from django_pgpubsub.vocabulary.observer import EventLog, Observer, Observers

HOW_TO_REGISTER = (
    "Register a handler in <app>/pubsub.py of an installed app:\n\n"
    "    from django_pgpubsub import handler\n\n"
    "    @handler('orders')\n"
    "    def on_order(event): ...\n"
)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, not {value}")
    return value


def show_logs(verbosity: int) -> None:
    """Send the library's logs to stderr unless LOGGING already handles them."""
    package_logger = logging.getLogger("django_pgpubsub")
    if package_logger.handlers or logging.getLogger().handlers:
        return
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger.addHandler(stream)
    package_logger.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))


class Command(BaseCommand):
    help = "Listen for PostgreSQL notifications and run the registered handlers."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--channel",
            action="append",
            dest="channels",
            metavar="CHANNEL",
            help="Listen on this channel (repeatable). Default: every registered channel.",
        )
        parser.add_argument(
            "--database",
            help="DATABASES alias to listen on. Default: PGPUBSUB['LISTENER_DATABASE'].",
        )
        parser.add_argument(
            "--max-events",
            type=positive_int,
            metavar="N",
            help="Exit (status 0) after dispatching N events.",
        )
        parser.add_argument(
            "--list", action="store_true", help="Print the channels and their handlers, and exit."
        )
        parser.add_argument(
            "--metrics-port",
            type=port,
            metavar="PORT",
            help="Serve Prometheus metrics on http://ADDRESS:PORT/metrics (needs the "
            "[metrics] extra; 0: any free port).",
        )
        parser.add_argument(
            "--metrics-addr",
            "--metrics-address",
            dest="metrics_address",
            default=DEFAULT_ADDRESS,
            metavar="ADDRESS",
            help=f"Address the metrics server binds. Default {DEFAULT_ADDRESS} (this host "
            "only); 0.0.0.0 for every interface.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._run(options)
        except (ImproperlyConfigured, ConnectionLost) as exc:
            # A mistake in a flag or a setting, or a database that stayed
            # unreachable: one line, not a traceback.
            raise CommandError(str(exc)) from exc

    def _run(self, options: dict[str, Any]) -> None:
        for alias in {options["database"] or conf.listener_database(), conf.database()}:
            database_wrapper(alias)  # names the known aliases when it is not one
        metrics = None
        if options["metrics_port"] is not None:
            metrics = ListenerMetrics(conf.database())
        try:
            listener = Listener(
                options["channels"],
                using=options["database"],
                max_events=options["max_events"],
                on_connect=self._announce,
                observer=self._observer(metrics, options["verbosity"]),
            )
        except InvalidChannel as exc:
            raise CommandError(str(exc)) from exc
        if metrics is not None:
            metrics.channels = listener.channels  # its durable gauges: these channels only
        if options["list"]:
            self._list(listener)
            return
        if not listener.channels:
            raise CommandError(f"No handlers are registered.\n{HOW_TO_REGISTER}")
        missing = listener.channels_without_handlers()
        if missing:
            raise CommandError(f"No handler for channel(s) {sorted(missing)}.\n{HOW_TO_REGISTER}")
        show_logs(options["verbosity"])
        server = None
        if metrics is not None:
            address = options["metrics_address"]
            try:
                server = serve(metrics, options["metrics_port"], address)
            except OSError as exc:
                raise CommandError(
                    f"Cannot serve metrics on {address}:{options['metrics_port']}: {exc}"
                ) from exc
            self.stdout.write(f"Serving metrics on {server.url}")
        try:
            with stop_on_signals(listener):
                listener.run()
        finally:
            if server is not None:
                server.close()

    def _observer(self, metrics: ListenerMetrics | None, verbosity: int) -> Observer | None:
        """Metrics, and at ``-v 2`` a line per handled event (nothing per event otherwise)."""
        observers: list[Observer] = [] if metrics is None else [metrics]
        if verbosity >= 2:
            observers.append(EventLog(registry.handlers, self._line))
        if len(observers) > 1:
            return Observers(*observers)
        return observers[0] if observers else None

    def _line(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _announce(self, listener: Listener, reconnected: bool) -> None:
        if reconnected:
            return
        handlers = sum(len(listener.registry.handlers(c)) for c in listener.channels)
        self.stdout.write(
            f"Listening on {len(listener.channels)} channel(s) with {handlers} handler(s) "
            f"on database {listener.using!r}: {', '.join(sorted(listener.channels))}"
        )
        self.stdout.flush()

    def _list(self, listener: Listener) -> None:
        for channel in sorted(listener.channels):
            names = [handler_name(f) for f in listener.registry.handlers(channel)]
            self.stdout.write(f"{channel}: {', '.join(names) or '(no handler)'}")
