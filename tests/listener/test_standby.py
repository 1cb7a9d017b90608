"""A listener whose database is a hot standby: it retries until a primary
answers (here, the standby promoted), instead of crashing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from django.db import connections

from django_pgpubsub import ConnectionLost, Registry
from django_pgpubsub.db.connection import open_connection
from django_pgpubsub.listener.loop import Listener
from scripts.pgtemp import TemporaryPostgres
from tests.helpers import ListenerThread, run_sql, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def standby() -> Iterator[TemporaryPostgres]:
    """A streaming hot standby of a throwaway primary; both removed after."""
    with TemporaryPostgres() as primary:
        server = TemporaryPostgres().clone_standby_of(primary)
        try:
            server.start()
            assert run_sql(server.url, "SELECT pg_is_in_recovery()") == [(True,)]
            yield server
        finally:
            server.destroy()


@pytest.fixture
def standby_alias(standby: TemporaryPostgres) -> Iterator[str]:
    """The "other" alias pointed at the standby for this test."""
    settings_dict = connections["other"].settings_dict
    saved = dict(settings_dict)
    settings_dict.update(
        HOST="127.0.0.1", PORT=str(standby.port), NAME="postgres", USER="postgres", PASSWORD=""
    )
    try:
        yield "other"
    finally:
        settings_dict.clear()
        settings_dict.update(saved)


def test_listen_on_a_standby_is_a_lost_connection_that_says_what_to_do(
    standby_alias: str,
) -> None:
    connection = open_connection(standby_alias)
    try:
        with pytest.raises(ConnectionLost, match="cannot execute LISTEN during recovery") as info:
            connection.listen(["jobs"])
        assert "target_session_attrs" in str(info.value)
    finally:
        connection.close()


def test_the_listener_retries_a_standby_until_it_is_promoted(
    standby: TemporaryPostgres, standby_alias: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    handlers = Registry()
    handlers.register(lambda event: seen.append(event.payload), "jobs")
    connected = threading.Event()
    listener = Listener(
        ["jobs"],
        using=standby_alias,
        registry=handlers,
        max_events=1,
        durable=False,
        on_connect=lambda _listener, _again: connected.set(),
    )
    with caplog.at_level(logging.WARNING, "django_pgpubsub"), ListenerThread(listener) as running:
        wait_until(
            lambda: sum("during recovery" in r.getMessage() for r in caplog.records) >= 2,
            what="two refused attempts",
        )
        assert not connected.is_set()
        run_sql(standby.url, "SELECT pg_promote()")
        assert connected.wait(20), "the listener did not connect to the promoted server"
        run_sql(standby.url, "SELECT pg_notify('jobs', 'after failover')")
        assert running.result(20) == 1
    assert seen == ["after failover"]
    retries = [r.getMessage() for r in caplog.records if "during recovery" in r.getMessage()]
    assert all("retrying in" in message for message in retries)
