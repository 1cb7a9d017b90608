"""Listeners as production runs them: each under its own database role without
``pg_read_all_stats``, with ``DATABASE`` through PgBouncer in transaction
pooling mode and the listening connection direct. A live listener's event is
never started again, whatever the roles and the pooler."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from django_pgpubsub import DurableEvent, Event, Registry, notify
from django_pgpubsub.listener.loop import Listener
from django_pgpubsub.models import OutboxEvent
from tests.helpers import ListenerThread, database_url, run_sql, wait_until
from tests.pgbouncer import PgBouncer
from tests.roles import ROLE_PASSWORD, create_role, database_alias

ROLES = ("worker_a", "worker_b")
ALIASES = [f"{role}_{where}" for role in ROLES for where in ("direct", "bounced")]

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", *ALIASES]),
    pytest.mark.slow,
]


@pytest.fixture(scope="module", autouse=True)
def role_aliases(django_db_setup: None, django_db_blocker: Any) -> Iterator[PgBouncer]:
    """The roles, and for each an alias of the test database, direct and
    through PgBouncer; yields the PgBouncer."""
    with ExitStack() as stack:
        with django_db_blocker.unblock():
            for role in ROLES:
                create_role(role)
        bouncer = stack.enter_context(
            PgBouncer(os.environ["DATABASE_URL"], users=["postgres", *ROLES])
        )
        for role in ROLES:
            credentials = {"USER": role, "PASSWORD": ROLE_PASSWORD}
            stack.enter_context(database_alias(f"{role}_direct", **credentials))
            where = {"HOST": "127.0.0.1", "PORT": str(bouncer.port)}
            stack.enter_context(database_alias(f"{role}_bounced", **credentials, **where))
        yield bouncer


def run_once_under_two_roles(caplog: pytest.LogCaptureFixture, outbox: str) -> None:
    """Two listeners, one per role, each with its outbox on its ``{role}_{outbox}``
    alias and listening directly, and one event whose handler runs for 3 s,
    while each listener's recovery sweeps every 0.2 s."""
    runs: list[tuple[str, int]] = []
    release = threading.Event()
    registry = Registry()

    def slow(event: Event) -> None:
        assert isinstance(event, DurableEvent)
        runs.append((threading.current_thread().name, event.attempt))
        release.wait(3)

    registry.register(slow, "jobs")
    with ExitStack() as stack:
        stack.enter_context(caplog.at_level("WARNING", "django_pgpubsub"))
        listeners = []
        for role in ROLES:
            pgpubsub = {
                **settings.PGPUBSUB,
                "DATABASE": f"{role}_{outbox}",
                "DURABLE_POLL_INTERVAL": 0.2,
            }
            with override_settings(PGPUBSUB=pgpubsub):
                listeners.append(Listener(["jobs"], using=f"{role}_direct", registry=registry))
        for listener in listeners:
            stack.enter_context(ListenerThread(listener)).wait_connected()
        notify("jobs", "slow", durable=True)
        wait_until(lambda: not OutboxEvent.objects.exists(), 30, "the event to be handled")
    assert [attempt for _, attempt in runs] == [1]
    assert "held by a listener that is gone" not in caplog.text
    assert "was claimed again while its" not in caplog.text


def test_a_live_listeners_claim_is_never_taken_by_a_listener_of_another_role(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_once_under_two_roles(caplog, "direct")


def test_a_live_listeners_claim_is_never_taken_with_the_outbox_behind_pgbouncer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_once_under_two_roles(caplog, "bounced")


def test_pgbouncer_recycles_its_server_connections(role_aliases: PgBouncer) -> None:
    """The test bed is production-shaped: a pooled session's pid changes."""
    url = database_url({**connection.settings_dict, "HOST": "127.0.0.1", "PORT": role_aliases.port})
    [(first,)] = run_sql(url, "SELECT pg_backend_pid()")
    time.sleep(2.5)  # longer than server_lifetime and server_idle_timeout
    [(second,)] = run_sql(url, "SELECT pg_backend_pid()")
    assert first != second
