"""The one registry of published models: a table is published once, by ``publish_on_save`` or
``publish_changes``, never both (each write would be sent twice).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

EVENTS = ("created", "updated", "deleted")


class Publisher(NamedTuple):
    """How a table is published."""

    function: str
    """``"publish_on_save"`` or ``"publish_changes"``."""
    channel: str


# By concrete model: a proxy and its concrete model share one table.
_published: dict[type[models.Model], Publisher] = {}


def _table(model: type[models.Model]) -> type[models.Model]:
    return model._meta.concrete_model or model


def published(model: type[models.Model]) -> Publisher | None:
    """How ``model``'s table is published, if it is."""
    return _published.get(_table(model))


def register(model: type[models.Model], function: str, channel: str) -> None:
    """Record that ``function`` publishes ``model``'s table on ``channel``.

    Raises:
        ImproperlyConfigured: The table is published already, by either function.
    """
    existing = published(model)
    if existing is not None:
        label = _table(model)._meta.label
        if existing.function == function:
            raise ImproperlyConfigured(
                f"{label} is already published on channel {existing.channel!r} by "
                f"{function}(); publish each model once."
            )
        raise ImproperlyConfigured(
            f"{label} is published by {existing.function}(); publishing it with {function}() "
            "too would send each write twice. Choose one."
        )
    _published[_table(model)] = Publisher(function, channel)


def unregister(model: type[models.Model], function: str) -> bool:
    """Forget ``model``'s publication by ``function``; ``False`` if there was none."""
    existing = published(model)
    if existing is None or existing.function != function:
        return False
    del _published[_table(model)]
    return True


def check_arguments(
    function: str,
    model: object,
    events: Iterable[str],
    fields_argument: str,
    fields: Iterable[str] | None,
) -> tuple[type[models.Model], frozenset[str], tuple[str, ...] | None]:
    """The checks that ``publish_on_save`` and ``publish_changes`` share.

    Args:
        function: The caller's name, for messages.
        model: What was passed as the model.
        events: Some of :data:`EVENTS`.
        fields_argument: The name of the caller's argument that lists fields.
        fields: Field names, each a concrete column of ``model``; ``None``
            for the default.

    Returns:
        The model, the chosen events, and the field names (``None`` if not given).

    Raises:
        ImproperlyConfigured: Any argument is unusable; the message says which.
    """
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise ImproperlyConfigured(f"{function}() takes a model class, not {model!r}.")
    if model._meta.abstract:
        raise ImproperlyConfigured(
            f"{model.__name__} is abstract and has no table; publish its concrete models."
        )
    if isinstance(events, str) or isinstance(fields, str):
        raise ImproperlyConfigured(
            f"events and {fields_argument} take a tuple of names, not a str."
        )
    chosen = frozenset(events)
    if not chosen or chosen - set(EVENTS):
        raise ImproperlyConfigured(
            f"{function}(events=...) takes some of {EVENTS}, not {sorted(events)}."
        )
    if fields is None:
        return model, chosen, None
    names = tuple(fields)
    for name in names:
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            raise ImproperlyConfigured(f"{model._meta.label} has no field {name!r}.") from None
        if not getattr(field, "concrete", False) or field.many_to_many:
            raise ImproperlyConfigured(
                f"{model._meta.label}.{name} is not a concrete column; only those are published."
            )
    return model, chosen, names
