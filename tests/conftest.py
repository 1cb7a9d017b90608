from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.contrib.contenttypes.models import ContentType
from django.db import connections
from django.db.models.signals import post_migrate

from django_pgpubsub import PubSub, Registry, conf, connect
from django_pgpubsub.listener.loop import Listener
from tests.helpers import ListenerThread, ManagePy, database_url


@pytest.fixture
def fresh_hub() -> Iterator[None]:
    """Close this process's hub after the test, so that the next starts with
    a new one (its connection, taps and subscriptions)."""
    yield
    import asyncio

    from django_pgpubsub.hub.hub import get_hub

    asyncio.run(get_hub().close())


@pytest.fixture
def registry() -> Registry:
    """A registry of the test's own handlers, empty: nothing leaks between tests."""
    return Registry()


@pytest.fixture
def running_listener(
    transactional_db: None, registry: Registry
) -> Iterator[Callable[..., ListenerThread]]:
    """Start a :class:`Listener` of ``channels`` in a thread (the test's
    ``registry`` unless told otherwise), wait until it listens; stopped after
    the test."""
    started: list[ListenerThread] = []

    def start(channels: list[str], **options: Any) -> ListenerThread:
        options.setdefault("registry", registry)
        thread = ListenerThread(Listener(channels, **options)).wait_connected()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def pubsub(transactional_db: None) -> Iterator[PubSub]:
    """A PubSub on the test database, on the listener's alias
    (``LISTENER_DATABASE``, else ``DATABASE``): a LISTEN needs a session of its
    own, which a transaction pooler in front of ``DATABASE`` does not keep.
    Closed after the test."""
    with connect(conf.listener_database()) as ps:
        yield ps


@pytest.fixture
def test_database_url(transactional_db: None) -> str:
    """URL of the test database, directly (what the run's settings read as
    ``DATABASE_URL``), for subprocesses and outside sessions: the listener's
    alias, which is ``DATABASE``'s unless that goes through a pooler."""
    return database_url(connections[conf.listener_database()].settings_dict)


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


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """The test databases, without rebuilding content types and permissions
    after every transactional test.

    Django's flush after each ``transaction=True`` test emits post_migrate,
    whose handlers recreate every content type and permission: some fifty
    queries per database per test, a third of the quick tier's time. No test
    needs permission rows; content types are created when first asked for.

    At the end, the hubs the tests left open are closed: each keeps a session
    on a test database (its thread reconnects by itself), which Django could
    not drop then.
    """
    post_migrate.disconnect(
        create_permissions, dispatch_uid="django.contrib.auth.management.create_permissions"
    )
    post_migrate.disconnect(create_contenttypes)
    yield
    import asyncio

    from django_pgpubsub.hub import hub

    for open_hub in list(hub._hubs.values()):
        asyncio.run(open_hub.close())


@pytest.fixture(autouse=True)
def _forget_content_types() -> None:
    """The previous test's flush emptied the table: drop the cached ids too."""
    ContentType.objects.clear_cache()
