"""PostgreSQL LISTEN/NOTIFY as a first-class Django feature."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from django_pgpubsub.exceptions import (
    ConnectionLost,
    InvalidChannel,
    InvalidPayload,
    OutboxMissing,
    PayloadTooLarge,
    PubSubError,
)
from django_pgpubsub.hub.hub import subscribe
from django_pgpubsub.hub.subscription import Subscription
from django_pgpubsub.publishing.apubsub import AsyncPubSub, aconnect
from django_pgpubsub.publishing.changes import publish_changes, unpublish_changes
from django_pgpubsub.publishing.context import publish_context
from django_pgpubsub.publishing.notify import anotify, notify, notify_many
from django_pgpubsub.publishing.pubsub import PubSub, connect
from django_pgpubsub.publishing.signals import publish_on_save, unpublish_on_save
from django_pgpubsub.vocabulary.events import DurableEvent, Event
from django_pgpubsub.vocabulary.handlers import Registry, handler, registry

try:
    __version__ = version("django-pg-pubsub")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AsyncPubSub",
    "ConnectionLost",
    "DurableEvent",
    "Event",
    "InvalidChannel",
    "InvalidPayload",
    "OutboxMissing",
    "PayloadTooLarge",
    "PubSub",
    "PubSubError",
    "Registry",
    "Subscription",
    "__version__",
    "aconnect",
    "anotify",
    "connect",
    "handler",
    "notify",
    "notify_many",
    "publish_changes",
    "publish_context",
    "publish_on_save",
    "registry",
    "subscribe",
    "unpublish_changes",
    "unpublish_on_save",
]
