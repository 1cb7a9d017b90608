"""``manage.py listen_events``: run the registered handlers."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from django_pgpubsub import conf
from django_pgpubsub.exceptions import InvalidChannel
from django_pgpubsub.listener import Listener
from django_pgpubsub.metrics import ListenerMetrics, serve
from django_pgpubsub.metrics_server import DEFAULT_ADDRESS
from django_pgpubsub.registry import handler_name
from django_pgpubsub.shutdown import stop_on_signals

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
            type=int,
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
        metrics = None
        if options["metrics_port"] is not None:
            try:
                metrics = ListenerMetrics(conf.database())
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from exc
        try:
            listener = Listener(
                options["channels"],
                using=options["database"],
                max_events=options["max_events"],
                on_connect=self._announce,
                observer=metrics,
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
            server = serve(metrics, options["metrics_port"], options["metrics_address"])
            self.stdout.write(f"Serving metrics on {server.url}")
        try:
            with stop_on_signals(listener):
                listener.run()
        finally:
            if server is not None:
                server.close()

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
