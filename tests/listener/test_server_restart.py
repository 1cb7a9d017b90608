"""listen_events keeps running while its PostgreSQL server is stopped and started."""

from __future__ import annotations

import signal
import time

import pytest

from scripts.pgtemp import TemporaryPostgres
from tests.helpers import ManagePy, run_sql, wait_until

pytestmark = pytest.mark.slow


def handled(url: str) -> list[str]:
    return [row[0] for row in run_sql(url, "SELECT payload FROM testapp_received ORDER BY id")]


def test_survives_the_server_going_away_for_three_seconds() -> None:
    # A server of its own, so stopping it disturbs nothing else. Persistent
    # Django connections: the handler's must not outlive the restart either.
    with TemporaryPostgres() as server:
        assert ManagePy("migrate", "--no-input", url=server.url).wait(timeout=120) == 0
        process = ManagePy(
            "listen_events", "--channel", "test.a", url=server.url, TEST_CONN_MAX_AGE="600"
        )
        try:
            process.wait_for_output("Listening on")
            run_sql(server.url, "SELECT pg_notify('test.a', 'before')")
            wait_until(lambda: handled(server.url) == ["before"], what="the first event")

            server.stop()
            time.sleep(3)
            assert process.process.poll() is None, process.output()
            server.start()

            process.wait_for_output("again after", timeout=30)
            run_sql(server.url, "SELECT pg_notify('test.a', 'after')")
            wait_until(lambda: handled(server.url) == ["before", "after"], what="the later event")
            assert "Listener cannot connect to 'default'" in process.output()
            process.signal(signal.SIGTERM)
            assert process.wait() == 0
        finally:
            process.kill()
