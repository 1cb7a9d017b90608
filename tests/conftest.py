from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.db import connection

from django_pgpubsub import PubSub, connect
from tests.helpers import ManagePy, database_url


@pytest.fixture
def pubsub(transactional_db: None) -> Iterator[PubSub]:
    """A PubSub on the test database; closed after the test."""
    with connect() as ps:
        yield ps


@pytest.fixture
def test_database_url(transactional_db: None) -> str:
    """URL of the test database, for subprocesses."""
    return database_url(connection.settings_dict)


@pytest.fixture
def listen_events(test_database_url: str) -> Iterator[Callable[..., ManagePy]]:
    """Start ``manage.py listen_events ARGS`` and wait until it listens."""
    started: list[ManagePy] = []

    def start(*args: str, ready: str = "Listening on") -> ManagePy:
        process = ManagePy("listen_events", *args, url=test_database_url)
        started.append(process)
        if ready:
            process.wait_for_output(ready)
        return process

    yield start
    for process in started:
        process.kill()
