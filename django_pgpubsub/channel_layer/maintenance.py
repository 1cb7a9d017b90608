"""The Channels layer's periodic work on the hub's thread: expired stored messages removed
in bounded batches, and the counts of dropped messages logged."""

from __future__ import annotations

from django_pgpubsub.channel_layer import messages
from django_pgpubsub.channel_layer.drops import DROPS
from django_pgpubsub.hub.hub import Hub

CHORE = "django_pgpubsub.layers"
BATCH = 1000  # rows per DELETE
BATCHES = 10  # DELETEs per run at most: the hub's thread serves others between them
MIN_INTERVAL, MAX_INTERVAL = 1.0, 30.0


def interval(expiry: float) -> float:
    """Seconds between two runs for a layer whose messages live ``expiry``
    seconds: a row outlives its expiry by about one more."""
    return min(max(expiry, MIN_INTERVAL), MAX_INTERVAL)


async def sweep(hub: Hub) -> int:
    """Remove up to ``BATCH * BATCHES`` expired stored messages.

    Returns:
        How many were removed.
    """
    removed = 0
    for _ in range(BATCHES):
        rows = await hub.execute(messages.SWEEP, (BATCH,))
        count = int(rows[0][0])
        removed += count
        if count < BATCH:
            break
    return removed


async def run(hub: Hub) -> None:
    """One run of the layer's periodic work."""
    DROPS.flush()
    await sweep(hub)


async def start(hub: Hub, expiry: float) -> None:
    """Have ``hub`` run the layer's periodic work until it closes (once per hub)."""
    await hub.schedule(CHORE, interval(expiry), lambda: run(hub))
