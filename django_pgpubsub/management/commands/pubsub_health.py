"""``manage.py pubsub_health``: exit 0 when healthy, 1 otherwise (for probes and cron)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from django_pgpubsub.exceptions import InvalidChannel
from django_pgpubsub.ops.health import check_health
from django_pgpubsub.ops.reads import DEFAULT_TIMEOUT


def number(
    kind: type[float] | type[int], low: float, high: float = math.inf
) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` from ``low`` to ``high``, bounds included."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            bounds = f"from {low:g} to {high:g}" if math.isfinite(high) else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {text}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    value = number(float, 0.0)(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return float(value)


class Command(BaseCommand):
    help = (
        "Check the database, the notification queue, durable events and (optionally) "
        "the listeners; exit 0 when healthy, 1 with one line per failed check otherwise."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--database", help="Alias to check. Default: PGPUBSUB['DATABASE'].")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument(
            "--max-queue-usage",
            type=number(float, 0.0, 1.0),
            default=0.5,
            metavar="FRACTION",
            help="Highest healthy pg_notification_queue_usage(), 0 to 1. Default 0.5.",
        )
        parser.add_argument(
            "--max-failed",
            type=number(int, 0),
            default=0,
            metavar="N",
            help="Most failed durable events that are still healthy. Default 0.",
        )
        parser.add_argument(
            "--max-pending-age",
            type=number(float, 0.0),
            default=300.0,
            metavar="SECONDS",
            help="Oldest healthy pending durable event, in seconds. Default 300.",
        )
        parser.add_argument(
            "--max-blocked-age",
            type=number(float, 0.0),
            default=None,
            metavar="SECONDS",
            help="Fail when an event held back behind a failed event of its ordering key "
            "is older than this. Default: a blocked key is a warning line only.",
        )
        parser.add_argument(
            "--require-listener",
            action="store_true",
            help="Require a connected listen_events process, and one for every channel "
            "with pending durable events.",
        )
        parser.add_argument(
            "--channel",
            action="append",
            dest="channels",
            default=[],
            metavar="CHANNEL",
            help="With --require-listener: a listener of this channel (repeatable).",
        )
        parser.add_argument(
            "--timeout",
            type=seconds,
            default=DEFAULT_TIMEOUT,
            metavar="SECONDS",
            help="Time the checks may take in all (connecting, each query, waiting for "
            f"a lock); what does not finish in time fails. Default {DEFAULT_TIMEOUT:g}.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["channels"] and not options["require_listener"]:
            raise CommandError("--channel needs --require-listener.")
        try:
            report = check_health(
                options["database"],
                max_queue_usage=options["max_queue_usage"],
                max_failed=options["max_failed"],
                max_pending_age=options["max_pending_age"],
                max_blocked_age=options["max_blocked_age"],
                require_listener=options["require_listener"],
                channels=options["channels"],
                timeout=options["timeout"],
            )
        except (InvalidChannel, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), sort_keys=False))
        else:
            for line in report.failures():
                self.stdout.write(line)
            for line in report.warnings():
                self.stdout.write(line)
            if report.healthy:
                self.stdout.write(report.summary())
        if not report.healthy:
            raise SystemExit(1)
