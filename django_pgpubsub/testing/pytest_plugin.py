"""The pytest plugin of django_pgpubsub (entry point ``pytest11``): the
``pubsub_eager`` fixture.

pytest loads it before pytest-django configures Django; nothing imported
here reads the settings until a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_pgpubsub.testing.eager import eager
from django_pgpubsub.testing.published import Published


@pytest.fixture
def pubsub_eager(db: None) -> Iterator[Published]:
    """The test runs in :func:`django_pgpubsub.testing.eager` mode; the fixture
    is the list of events seen at commit (with ``assert_published``).

    It needs the database (pytest-django's ``db``; ``transactional_db`` or
    ``django_db(transaction=True)`` take precedence). Inside the test's
    transaction, publish within ``django_capture_on_commit_callbacks(execute=True)``.
    """
    with eager() as published:
        yield published
