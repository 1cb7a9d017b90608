"""``publish_changes``: statement-level triggers that publish every write to a table, whoever
makes it, installed by migrations through django-pgtrigger (the ``[triggers]`` extra).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar, overload

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from django_pgpubsub.publishing.published_models import (
    EVENTS,
    check_arguments,
    register,
    unregister,
)
from django_pgpubsub.publishing.triggers import Publication
from django_pgpubsub.vocabulary.channel_names import validate_channel

try:
    import pgtrigger
except ImportError:  # pragma: no cover - the [triggers] extra is not installed
    HAVE_PGTRIGGER = False
else:
    HAVE_PGTRIGGER = True

ModelT = TypeVar("ModelT", bound=type[models.Model])

TRIGGER_PREFIX = "pgpubsub_"
"""Trigger names are ``pgpubsub_created``, ``pgpubsub_updated``, ``pgpubsub_deleted``."""

# The model each publication's triggers are registered on (the published
# model, or the proxy made for it in the caller's app), by concrete model.
_owners: dict[type[models.Model], type[models.Model]] = {}


def build_triggers(publication: Publication) -> list[pgtrigger.Trigger]:
    """One AFTER ... FOR EACH STATEMENT trigger per event kind (PostgreSQL
    allows transition tables only on single-operation triggers)."""
    operations = {
        "created": pgtrigger.Insert,
        "updated": pgtrigger.Update,
        "deleted": pgtrigger.Delete,
    }
    references = {
        event: pgtrigger.Referencing(old=old, new=new)  # type: ignore[no-untyped-call]
        for event in EVENTS
        for old, new in [publication.transition_tables(event)]
    }
    return [
        pgtrigger.Trigger(
            name=TRIGGER_PREFIX + event,
            level=pgtrigger.Statement,
            when=pgtrigger.After,
            operation=operations[event],
            referencing=references[event],
            declare=publication.declare(),
            func=publication.function_body(event),
        )
        for event in EVENTS
        if event in publication.events
    ]


def _owner(model: type[models.Model], caller: str) -> type[models.Model]:
    """The model whose app gets the triggers' migration.

    As Django puts a model in the app of the module that defines it, the
    triggers go to the app of the module that calls ``publish_changes``. For
    a model of another app (``auth.User``), that takes a proxy model
    ``Published<Name>`` in the caller's app: its migration installs the
    triggers on the other app's table. Called from outside any installed
    app, they go to the model's own app.
    """
    app = apps.get_containing_app_config(caller)
    if app is None or app.label == model._meta.app_label:
        return model
    name = f"Published{model._meta.object_name}"
    existing = apps.all_models[app.label].get(name.lower())
    if existing is not None:
        if existing._meta.concrete_model is not model._meta.concrete_model:
            raise ImproperlyConfigured(
                f"{app.label}.{name} exists already and is not a proxy of {model._meta.label}."
            )
        return existing
    meta = type("Meta", (), {"proxy": True, "app_label": app.label})
    doc = f"Carries the publish_changes triggers of {model._meta.label} in {app.label}."
    proxy = type(name, (model,), {"__module__": caller, "Meta": meta, "__doc__": doc})
    # Importable where its __module__ says, as if the caller had written it:
    # Django 5.2's shell imports every model by that path, and says so on
    # each start when one cannot be.
    module = sys.modules.get(caller)
    if module is not None and not hasattr(module, name):
        setattr(module, name, proxy)
    return proxy


def _check_arguments(
    model: object, events: Iterable[str], changed: Iterable[str] | None
) -> tuple[frozenset[str], tuple[str, ...] | None]:
    if not HAVE_PGTRIGGER or not apps.is_installed("pgtrigger"):
        raise ImproperlyConfigured(
            "publish_changes() needs django-pgtrigger: pip install 'django-pg-pubsub[triggers]' "
            "and add 'pgtrigger' to INSTALLED_APPS."
        )
    model, chosen, names = check_arguments("publish_changes", model, events, "changed", changed)
    if names is None:
        return chosen, None
    if not names:
        raise ImproperlyConfigured("changed=() would publish no update; leave it None.")
    for name in names:
        field = model._meta.get_field(name)
        if field.model is not model._meta.concrete_model:
            raise ImproperlyConfigured(
                f"{model._meta.label}.{name} lives in the table of {field.model._meta.label}; "
                "a trigger sees the columns of its own table only."
            )
    return chosen, names


@overload
def publish_changes(
    model: ModelT,
    *,
    channel: str | None = ...,
    events: Iterable[str] = ...,
    changed: Iterable[str] | None = ...,
    durable: bool = ...,
    ordering: Literal["pk"] | None = ...,
) -> ModelT: ...


@overload
def publish_changes(
    model: None = ...,
    *,
    channel: str | None = ...,
    events: Iterable[str] = ...,
    changed: Iterable[str] | None = ...,
    durable: bool = ...,
    ordering: Literal["pk"] | None = ...,
) -> Callable[[ModelT], ModelT]: ...


def publish_changes(
    model: ModelT | None = None,
    *,
    channel: str | None = None,
    events: Iterable[str] = EVENTS,
    changed: Iterable[str] | None = None,
    durable: bool = False,
    ordering: Literal["pk"] | None = None,
) -> ModelT | Callable[[ModelT], ModelT]:
    """Publish every write to a model's table, by database triggers.

    Installs AFTER ... FOR EACH STATEMENT triggers through migrations (run
    ``makemigrations`` after adding, changing or removing a publication), so
    ``bulk_create``, ``QuerySet.update``, raw SQL and other programs' writes
    are published too. One notification per statement and event kind:
    ``{"event": "created"|"updated"|"deleted", "model": "app_label.model_name",
    "pks": [...], "count": N}``; a change too large for one notification is
    split into several, each with ``"part"`` and ``"parts"``.

    Args:
        model: The model class (also usable as a class decorator).
        channel: Default: the lower-case label of the model, e.g. ``"shop.order"``.
        events: Which of ``"created"``, ``"updated"``, ``"deleted"`` to publish.
        changed: Field names: updates then publish only rows where one of
            these columns changed, and nothing when none did.
        durable: Write an outbox row per statement and event kind instead
            (at-least-once delivery, no size limit, no splitting).
        ordering: With ``durable=True``, ``"pk"`` writes one outbox row per
            changed row instead, with one key in ``pks`` and the ordering key
            ``"<app_label.model_name>:<pk>"``: each row's changes are handled
            one at a time, in order, across listeners.

    Returns:
        The model, unchanged (or a decorator, when called without a model).

    Raises:
        ImproperlyConfigured: django-pgtrigger is missing, not a concrete
            model, an unknown event or field, or the model is already
            published (by either function), or ``ordering`` is not ``"pk"``
            or comes without ``durable=True``.
        InvalidChannel: The channel name is unusable.
    """
    caller = sys._getframe(1).f_globals.get("__name__", "")

    def publish(cls: ModelT) -> ModelT:
        return _publish(
            cls,
            caller,
            channel=channel,
            events=events,
            changed=changed,
            durable=durable,
            ordering=ordering,
        )

    return publish if model is None else publish(model)


def _publish(
    model: ModelT,
    caller: str,
    *,
    channel: str | None,
    events: Iterable[str],
    changed: Iterable[str] | None,
    durable: bool,
    ordering: str | None,
) -> ModelT:
    if ordering is not None:
        if ordering != "pk":
            raise ImproperlyConfigured(
                f'publish_changes(ordering=...) takes "pk" or None, not {ordering!r}.'
            )
        if not durable:
            raise ImproperlyConfigured(
                'publish_changes(ordering="pk") needs durable=True: ordering keys order '
                "durable events only."
            )
    chosen, columns = _check_arguments(model, events, changed)
    concrete = model._meta.concrete_model or model
    name = validate_channel(channel if channel is not None else concrete._meta.label_lower)
    register(concrete, "publish_changes", name)
    owner = _owner(model, caller)
    publication = Publication(concrete, name, chosen, columns, durable, ordering)
    pgtrigger.register(*build_triggers(publication))(owner)
    _owners[concrete] = owner
    return model


def unpublish_changes(model: type[models.Model]) -> None:
    """Undo :func:`publish_changes` (for tests); a no-op if not published.

    The installed triggers stay until a migration removes them.
    """
    concrete = model._meta.concrete_model or model
    owner = _owners.pop(concrete, None)
    if owner is None:
        return
    unregister(concrete, "publish_changes")
    for trigger in list(getattr(owner._meta, "triggers", [])):
        if trigger.name.startswith(TRIGGER_PREFIX):
            trigger.unregister(owner)
