"""``publish_on_save``: model-signal hooks that publish creates, updates and deletes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any, TypeVar, overload

from django.db import connections, models
from django.db.models.signals import class_prepared, post_delete, post_save
from django.dispatch import receiver
from django.utils.encoding import is_protected_type

from django_pgpubsub.exceptions import InvalidPayload
from django_pgpubsub.publishing.context import current_context
from django_pgpubsub.publishing.notify import notify
from django_pgpubsub.publishing.published_models import (
    EVENTS,
    check_arguments,
    register,
    unregister,
)
from django_pgpubsub.vocabulary.channel_names import validate_channel

logger = logging.getLogger("django_pgpubsub.publishing")

ModelT = TypeVar("ModelT", bound=type[models.Model])


class ModelPublisher:
    """Publishes the writes of one model; connected to its post_save/post_delete."""

    def __init__(
        self,
        model: type[models.Model],
        channel: str,
        field_names: tuple[str, ...] | None,
        events: frozenset[str],
    ) -> None:
        self.model = model
        self.label = model._meta.label_lower
        self.channel = channel
        self._field_names = field_names
        self.events = events
        self._warned = False
        self._skipped: set[str] = set()
        self._pk_attname = model._meta.pk.attname
        self._save_senders: list[type[models.Model]] = []

    @cached_property
    def fields(self) -> tuple[models.Field[Any, Any], ...]:
        """The fields to publish, resolved at first use (apps may not be ready before)."""
        opts = self.model._meta
        if self._field_names is None:
            return tuple(f for f in opts.concrete_fields if not f.primary_key)
        return tuple(opts.get_field(name) for name in self._field_names)  # type: ignore[misc]

    def payload(self, event: str, instance: models.Model) -> dict[str, Any]:
        """The published dict; values serialised as Django's serializers do.

        A field that was not loaded (``.only()``, ``.defer()``) is never read:
        reading it would query the row again, and after a delete it is gone.
        It is left out of ``"fields"`` and named under ``"deferred"``.
        """
        loaded = instance.__dict__
        values = {}
        deferred = []
        for field in self.fields:
            attname = field.attname
            if attname not in loaded:
                deferred.append(field.name)
                continue
            value = loaded[attname]
            values[field.name] = (
                value if is_protected_type(value) else field.value_to_string(instance)
            )
        # The published model's own primary key: for a multi-table child it
        # is the parent link, whose value is the parent row's key.
        pk = loaded[self._pk_attname]
        payload = {
            "event": event,
            "model": self.label,
            "pk": pk if is_protected_type(pk) else str(pk),
            "fields": values,
        }
        if deferred:
            payload["deferred"] = deferred
        return payload

    def publish(self, event: str, instance: models.Model, using: str) -> None:
        if connections[using].vendor != "postgresql":
            # The write itself must not fail: skip, and say so once per alias.
            if using not in self._skipped:
                self._skipped.add(using)
                logger.warning(
                    "%s events on database %r are not published: it is %s, which "
                    "has no NOTIFY (logged once per model and database).",
                    self.label,
                    using,
                    connections[using].vendor,
                )
            return
        payload = self.payload(event, instance)
        context = current_context()
        if context is not None:
            payload["context"] = context
        try:
            notify(self.channel, payload, using=using)
        except InvalidPayload as exc:
            # The user's write must never fail because of us: send what fits.
            if not self._warned:
                self._warned = True
                logger.warning(
                    "%s events on %r are sent without fields: %s (logged once per model).",
                    self.label,
                    self.channel,
                    exc,
                )
            notify(
                self.channel,
                {**payload, "fields": None, "truncated": True},
                using=using,
            )

    def on_save(
        self, sender: type[models.Model], instance: models.Model, created: bool, **kwargs: Any
    ) -> None:
        if kwargs.get("raw"):
            return  # fixture loading
        event = "created" if created else "updated"
        if event in self.events:
            self.publish(event, instance, kwargs["using"])

    def on_delete(self, sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
        self.publish("deleted", instance, kwargs["using"])

    def connect(self) -> None:
        uid = f"django_pgpubsub:{self.label}"
        if self.events & {"created", "updated"}:
            for sender in (self.model, *_descendants(self.model)):
                self.connect_descendant(sender)
        if "deleted" in self.events:
            # Deleting a multi-table child deletes its parent rows, and Django
            # sends post_delete for each of them itself.
            post_delete.connect(self.on_delete, sender=self.model, weak=False, dispatch_uid=uid)

    def connect_descendant(self, sender: type[models.Model]) -> None:
        """Publish saves of ``sender``: the model, or a multi-table child of it.

        Saving a child writes its parent rows too, but Django sends post_save
        for the child class only.
        """
        if not self.events & {"created", "updated"} or sender in self._save_senders:
            return
        uid = f"django_pgpubsub:{self.label}"
        post_save.connect(self.on_save, sender=sender, weak=False, dispatch_uid=uid)
        self._save_senders.append(sender)

    def disconnect(self) -> None:
        uid = f"django_pgpubsub:{self.label}"
        for sender in self._save_senders:
            post_save.disconnect(sender=sender, dispatch_uid=uid)
        self._save_senders.clear()
        post_delete.disconnect(sender=self.model, dispatch_uid=uid)


def _descendants(model: type[models.Model]) -> list[type[models.Model]]:
    """The multi-table children of ``model`` defined so far, at any depth."""
    found = []
    for subclass in model.__subclasses__():
        if not subclass._meta.proxy and not subclass._meta.abstract:
            found.append(subclass)
        found.extend(_descendants(subclass))
    return found


@receiver(class_prepared)
def _connect_new_descendant(sender: type[models.Model], **kwargs: Any) -> None:
    """A multi-table child defined after its parent was published publishes it too."""
    if sender._meta.proxy or sender._meta.abstract:
        return
    for parent in sender._meta.get_parent_list():
        publisher = _publishers.get(parent)
        if publisher is not None:
            publisher.connect_descendant(sender)


_publishers: dict[type[models.Model], ModelPublisher] = {}


@overload
def publish_on_save(
    model: ModelT,
    *,
    channel: str | None = ...,
    fields: Iterable[str] | None = ...,
    events: Iterable[str] = ...,
) -> ModelT: ...


@overload
def publish_on_save(
    model: None = ...,
    *,
    channel: str | None = ...,
    fields: Iterable[str] | None = ...,
    events: Iterable[str] = ...,
) -> Callable[[ModelT], ModelT]: ...


def publish_on_save(
    model: ModelT | None = None,
    *,
    channel: str | None = None,
    fields: Iterable[str] | None = None,
    events: Iterable[str] = EVENTS,
) -> ModelT | Callable[[ModelT], ModelT]:
    """Publish a model's creates, updates and deletes, in the write's transaction.

    Use it as a class decorator (``@publish_on_save`` or
    ``@publish_on_save(channel=...)``) or call it with any model class,
    including one you do not own (``publish_on_save(User)``). The payload is
    ``{"event": "created"|"updated"|"deleted", "model": "app_label.model_name",
    "pk": ..., "fields": {...}}``. Fixture loading (``raw=True``) publishes
    nothing. A payload too large for NOTIFY is replaced by one with
    ``"fields": null, "truncated": true`` so the write never fails. Fields
    not loaded (``.only()``, ``.defer()``) are never read: they are listed
    under ``"deferred"`` instead. Saves and deletes of a multi-table child
    publish for the published parent too. Writes on a database that is not
    PostgreSQL are not published (a warning is logged once).

    Args:
        model: The model class.
        channel: Default: the lower-case model label, e.g. ``"shop.order"``.
        fields: Field names to publish. Default: every concrete field but the
            primary key (which is ``"pk"``).
        events: Which of ``"created"``, ``"updated"``, ``"deleted"`` to publish.

    Returns:
        The model, unchanged (or a decorator, when called without a model).

    Raises:
        ImproperlyConfigured: Not a concrete model, an unknown field or event,
            or the model is already published.
        InvalidChannel: The channel name is unusable.
    """
    if model is None:
        return lambda cls: publish_on_save(cls, channel=channel, fields=fields, events=events)
    _, chosen, field_names = check_arguments("publish_on_save", model, events, "fields", fields)
    name = validate_channel(channel if channel is not None else model._meta.label_lower)
    register(model, "publish_on_save", name)
    publisher = ModelPublisher(model, name, field_names, chosen)
    publisher.connect()
    _publishers[model] = publisher
    return model


def unpublish_on_save(model: type[models.Model]) -> None:
    """Undo :func:`publish_on_save` for ``model`` (for tests); a no-op if not published."""
    publisher = _publishers.pop(model, None)
    if publisher is not None:
        unregister(model, "publish_on_save")
        publisher.disconnect()
