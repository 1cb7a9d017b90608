"""The per-process hub: one LISTEN connection shared by every subscriber.

Internal but for :func:`get_hub`: import the public names from ``django_pgpubsub``.
"""

from __future__ import annotations

from django_pgpubsub.hub.hub import Hub, get_hub, subscribe
from django_pgpubsub.hub.subscription import Subscription

__all__ = ["Hub", "Subscription", "get_hub", "subscribe"]
