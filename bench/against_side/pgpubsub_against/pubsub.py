"""The two durable handlers, registered with the ``handler`` decorator every tree has."""

from __future__ import annotations

from django_pgpubsub import Event, handler

from .models import AgainstRow

TRIVIAL = "bench.against.trivial"
WRITES = "bench.against.writes"
CHANNELS = {"trivial": TRIVIAL, "writes": WRITES}


@handler(TRIVIAL)
def trivial(event: Event) -> None:
    """Reads the payload, writes nothing (bench/pubsub.py's ``bench.durable``)."""
    event.data["id"]


@handler(WRITES)
def writes(event: Event) -> None:
    """Saves one row through the ORM (bench/pubsub.py's ``bench.durable.write``)."""
    AgainstRow(value=event.data["id"]).save()
