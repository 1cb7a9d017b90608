"""Streams on one LISTEN connection per process: the hub and its subscriptions."""

from __future__ import annotations

from django_pgpubsub.streams.hub import Hub, get_hub, subscribe
from django_pgpubsub.streams.subscription import Subscription

__all__ = ["Hub", "Subscription", "get_hub", "subscribe"]
