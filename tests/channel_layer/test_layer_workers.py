"""Normal channels as Channels users run them: ``manage.py runworker`` in two processes with
a SyncConsumer (tests/channels_app), this test as the sending process."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_pgpubsub.hub.hub import get_hub
from django_pgpubsub.layers import PubSubChannelLayer
from django_pgpubsub.models import LayerMessage
from tests.helpers import ManagePy, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not is_psycopg3, reason="the hub needs psycopg 3"),
]

HANDLED = re.compile(r"^handled (\d+) (\d+)$", re.MULTILINE)


@pytest.fixture
def workers(test_database_url: str) -> Iterator[list[ManagePy]]:
    started: list[ManagePy] = []
    yield started
    for worker in started:
        worker.kill()
    asyncio.run(get_hub().close())


def handled(workers: list[ManagePy]) -> list[int]:
    return [int(n) for worker in workers for n, _ in HANDLED.findall("".join(worker.stdout))]


def test_runworker_processes_share_a_channel_and_handle_each_message_once(
    workers: list[ManagePy], test_database_url: str
) -> None:
    layer = PubSubChannelLayer()
    send = async_to_sync(layer.send)
    for n in range(20):  # no worker runs yet
        send("thumbnails", {"type": "thumbnail.make", "n": n})
    with pytest.raises(RuntimeError), transaction.atomic():
        for n in range(1000, 1005):
            send("thumbnails", {"type": "thumbnail.make", "n": n})
        raise RuntimeError("rolled back")
    for _ in range(2):
        workers.append(
            ManagePy(
                "runworker",
                "thumbnails",
                url=test_database_url,
                settings="tests.channels_app.settings",
            )
        )
    wait_until(lambda: len(handled(workers)) >= 20, 30, "the 20 early messages")
    for n in range(20, 520):
        send("thumbnails", {"type": "thumbnail.make", "n": n})
    wait_until(lambda: len(handled(workers)) >= 520, 30, "the 500 later messages")
    # The last message handled leaves no row: nothing is left to arrive.
    wait_until(lambda: not LayerMessage.objects.filter(channel="thumbnails").exists(), 10)
    assert sorted(handled(workers)) == list(range(520)), [w.output()[-2000:] for w in workers]
