"""``manage.py durable_events``: inspect, retry, release and purge durable events."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, ProgrammingError

from django_pgpubsub import conf
from django_pgpubsub.db.connection import database_wrapper, outbox_missing
from django_pgpubsub.exceptions import InvalidChannel
from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.ops.health import unhandled_channels
from django_pgpubsub.vocabulary.handlers import registry

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def age(text: str) -> timedelta:
    """``30s``, ``15m``, ``12h`` or ``7d``."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 30s, 15m, 12h or 7d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = "List durable events by channel and state; retry, release or purge them."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--database", help="Alias of the outbox. Default: PGPUBSUB['DATABASE']."
        )
        actions = parser.add_subparsers(dest="action", metavar="{status,retry,release,purge}")
        actions.add_parser("status", help="Counts by channel and state, and running events.")
        for name, what in (
            ("retry", "Make failed events pending again."),
            ("release", "Hand running events back to pending (a stuck claim)."),
        ):
            action = actions.add_parser(name, help=what)
            action.add_argument(
                "--channel", action="append", help="Only this channel (repeatable)."
            )
            action.add_argument(
                "--id", action="append", type=int, dest="ids", help="Only this event."
            )
        purge = actions.add_parser("purge", help="Delete failed events older than an age.")
        purge.add_argument("--older-than", type=age, required=True, metavar="AGE")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"] or conf.database()
        try:
            database_wrapper(alias)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        try:
            self._act(alias, options)
        except ProgrammingError as exc:
            missing = outbox_missing(exc, alias)
            if missing is None:
                raise
            raise CommandError(str(missing)) from exc

    def _act(self, alias: str, options: dict[str, Any]) -> None:
        events = OutboxEvent.objects.using(alias)
        action = options["action"] or "status"
        if options.get("ids") is not None:
            events = events.filter(id__in=options["ids"])
        if options.get("channel") is not None:
            try:
                events = events.for_channels(options["channel"])
            except InvalidChannel as exc:
                raise CommandError(str(exc)) from exc
        if action == "retry":
            self.stdout.write(f"{events.retry()} failed event(s) will be retried.")
        elif action == "release":
            if options["ids"] is None and options["channel"] is None:
                raise CommandError("Name the events to release: --id or --channel.")
            self.stdout.write(f"{events.release()} running event(s) released.")
        elif action == "purge":
            self.stdout.write(f"Deleted {events.purge(options['older_than'])} failed event(s).")
        else:
            self._status(events, alias)

    def _status(self, events: Any, alias: str) -> None:
        rows = events.counts()
        if not rows:
            self.stdout.write("No durable events are waiting or failed.")
            return
        width = max(len("channel"), *(len(channel) for channel, _, _ in rows))
        self.stdout.write(f"{'channel':<{width}}  {'state':<7}  count")
        for channel, state, count in rows:
            self.stdout.write(f"{channel:<{width}}  {state:<7}  {count}")
        running = list(events.running()[:20])
        if running:
            self.stdout.write("Running (held by, since, lease expires):")
            for event in running:
                self.stdout.write(
                    f"  #{event.pk} {event.channel} attempt {event.attempts}: "
                    f"{event.holder}, since {event.claimed_at:%Y-%m-%d %H:%M:%S}, "
                    f"lease expires {event.lease_expires_at:%H:%M:%S}"
                )
        blocked, oldest = events.blocked_keys()
        if blocked:
            self.stdout.write(
                f"{blocked} ordering key(s) blocked by a failed attempt; the oldest "
                f"event held back waits for {oldest or 0:.0f} s."
            )
        if any(state == "failed" for _, state, _ in rows):
            self.stdout.write("Retry failed events with `durable_events retry`.")
        if any(state == "pending" for _, state, _ in rows):
            self._unhandled(alias)

    def _unhandled(self, alias: str) -> None:
        try:
            channels = unhandled_channels(alias)
        except DatabaseError as exc:
            self.stdout.write(f"Cannot tell which channels have a running listener: {exc}")
            return
        # This process autodiscovered the handlers, as listen_events does.
        registered = registry.channels()
        handled = [channel for channel in channels if channel in registered]
        orphans = [channel for channel in channels if channel not in registered]
        if handled:
            self.stdout.write(
                f"No running listen_events handles channel(s) {handled}: their pending "
                "events wait until one does. Their handlers are registered: start "
                "`manage.py listen_events` (it listens on every registered channel), or "
                "add --channel for them to the one running."
            )
        if orphans:
            self.stdout.write(
                f"No handler is registered for channel(s) {orphans}: their pending events "
                "wait until one is. Register one (@handler in <app>/pubsub.py of an "
                "installed app), then start `manage.py listen_events`."
            )
