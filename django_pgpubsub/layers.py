"""Django Channels on PostgreSQL: ``CHANNEL_LAYERS`` backend
``"django_pgpubsub.layers.PubSubChannelLayer"`` (needs the ``channels`` extra).
"""

from __future__ import annotations

from django_pgpubsub.channel_layer.layer import RESYNC_TYPE, PubSubChannelLayer

__all__ = ["RESYNC_TYPE", "PubSubChannelLayer"]
