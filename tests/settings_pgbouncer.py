"""The test settings with ``DATABASE`` through PgBouncer in transaction pooling
mode (server connections recycled every second) and ``LISTENER_DATABASE``
direct, as production runs them: ``make test-pgbouncer``.

Starts the PgBouncer for the run in front of ``DATABASE_URL``, once: child
processes inherit its address (``PGBOUNCER_ADDRESS``), so that a
``manage.py`` run by a test with these settings and the test database's
direct URL as ``DATABASE_URL`` (tests/helpers.py, ``ManagePy``) is shaped as
the test run is. Run pytest with
``--reuse-db``: PgBouncer keeps server connections to the test database for a
second after the run, which would make dropping it fail; the server is
thrown away anyway.
"""

from __future__ import annotations

import atexit
import os
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.signals import setting_changed

from tests.pgbouncer import PgBouncer
from tests.settings import *  # noqa: F403
from tests.settings import _url

if "PGBOUNCER_ADDRESS" not in os.environ:
    _bouncer = PgBouncer(_url, users=["postgres", "worker_a", "worker_b"]).start()
    atexit.register(_bouncer.stop)
    os.environ["PGBOUNCER_ADDRESS"] = f"127.0.0.1:{_bouncer.port}"


def _through_pgbouncer(url: str) -> str:
    """``url`` (user, password, database) with PgBouncer's host and port."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    netloc[-1] = os.environ["PGBOUNCER_ADDRESS"]
    return urlunsplit(parts._replace(netloc="@".join(netloc)))


DATABASES = {
    **DATABASES,  # noqa: F405
    "default": {
        **DATABASES["default"],  # noqa: F405
        **dj_database_url.parse(_through_pgbouncer(_url)),
        # Django's advice for transaction poolers.
        "DISABLE_SERVER_SIDE_CURSORS": True,
    },
    # The same database, directly: what listeners LISTEN on.
    "direct": {**dj_database_url.parse(_url), "TEST": {"MIRROR": "default"}},
}
PGPUBSUB = {**PGPUBSUB, "LISTENER_DATABASE": "direct"}  # noqa: F405


def _keep_listening_direct(*, setting: str, value: object, enter: bool, **kwargs: object) -> None:
    """Tests override PGPUBSUB as a whole: keep their listeners direct, as any
    deployment behind a transaction pooler must."""
    if setting == "PGPUBSUB" and enter and isinstance(value, dict):
        value.setdefault("LISTENER_DATABASE", "direct")


setting_changed.connect(_keep_listening_direct, dispatch_uid="pgpubsub-tests-pgbouncer")
