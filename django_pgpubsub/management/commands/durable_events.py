"""``manage.py durable_events``: inspect, retry and purge durable events."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand

from django_pgpubsub.outbox import counts, purge_failed, retry_failed

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def age(text: str) -> timedelta:
    """``30s``, ``15m``, ``12h`` or ``7d``."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 30s, 15m, 12h or 7d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = "List durable events by channel and state; retry or purge failed ones."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--database", help="Alias of the outbox. Default: PGPUBSUB['DATABASE']."
        )
        actions = parser.add_subparsers(dest="action", metavar="{status,retry,purge}")
        actions.add_parser("status", help="Counts by channel and state (the default).")
        retry = actions.add_parser("retry", help="Make failed events pending again.")
        retry.add_argument("--channel", action="append", help="Only this channel (repeatable).")
        retry.add_argument("--id", action="append", type=int, dest="ids", help="Only this event.")
        purge = actions.add_parser("purge", help="Delete failed events older than an age.")
        purge.add_argument("--older-than", type=age, required=True, metavar="AGE")

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        action = options["action"] or "status"
        if action == "retry":
            count = retry_failed(ids=options["ids"], channels=options["channel"], using=using)
            self.stdout.write(f"{count} failed event(s) will be retried.")
        elif action == "purge":
            count = purge_failed(options["older_than"], using=using)
            self.stdout.write(f"Deleted {count} failed event(s).")
        else:
            rows = counts(using)
            if not rows:
                self.stdout.write("No durable events are waiting or failed.")
                return
            width = max(len("channel"), *(len(channel) for channel, _, _ in rows))
            self.stdout.write(f"{'channel':<{width}}  {'state':<7}  count")
            for channel, state, count in rows:
                self.stdout.write(f"{channel:<{width}}  {state:<7}  {count}")
            if not any(state == "failed" for _, state, _ in rows):
                return
            self.stdout.write("Retry failed events with `durable_events retry`.")
