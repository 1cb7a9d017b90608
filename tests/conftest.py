from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_pgpubsub import PubSub, connect


@pytest.fixture
def pubsub(transactional_db: None) -> Iterator[PubSub]:
    """A PubSub on the test database; closed after the test."""
    with connect() as ps:
        yield ps
