"""The kinds of setting (``Seconds``, ``Count``, ``Choice``...): how one setting is read,
checked and described.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeGuard, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

T = TypeVar("T")

#: Every declaration, in declaration order (the README's order).
DECLARED: dict[str, Setting[Any]] = {}

# notify() needs DATABASE and DEBUG on every call, and reading Django's lazy
# settings costs a noticeable share of a round trip. Cached, and forgotten when
# override_settings() (anything that sends setting_changed) changes them;
# Django asks that settings not be altered otherwise at run time.
CACHE: dict[str, Any] = {}


@receiver(setting_changed)
def _forget_cached(*, setting: str, **kwargs: Any) -> None:
    if setting in ("PGPUBSUB", "DEBUG"):
        CACHE.clear()


def configured() -> dict[str, Any]:
    """``settings.PGPUBSUB``, or ``{}`` when it is not set."""
    values = getattr(settings, "PGPUBSUB", None) or {}
    if not isinstance(values, dict):
        raise ImproperlyConfigured("settings.PGPUBSUB must be a dict.")
    return values


@dataclass(frozen=True)
class Setting(ABC, Generic[T]):
    """One setting. Call it to read its current value, checked.

    Attributes:
        name: The key in ``settings.PGPUBSUB``.
        default: The value when the key is absent.
        help: What it does, in reStructuredText (the README's text).
        cached: Kept until ``setting_changed`` (for values read on every
            ``notify()``).
    """

    name: str
    default: T
    help: str
    cached: bool = False

    def __post_init__(self) -> None:
        if self.name in DECLARED:
            raise ValueError(f"PGPUBSUB[{self.name!r}] is declared twice.")
        DECLARED[self.name] = self

    def __call__(self) -> T:
        if self.cached:
            try:
                return CACHE[self.name]  # type: ignore[no-any-return]
            except KeyError:
                pass
        value = self.validate(configured().get(self.name, self.default))
        if self.cached:
            CACHE[self.name] = value
        return value

    @property
    @abstractmethod
    def kind(self) -> str:
        """The type and bounds, in words (for the README and error messages)."""

    @property
    def default_text(self) -> str:
        """The default, as the README shows it."""
        default: object = self.default
        if isinstance(default, tuple):
            default = list(default)  # what one writes in settings
        return "``" + repr(default).replace("'", '"') + "``"

    @abstractmethod
    def validate(self, value: object) -> T:
        """Return ``value`` as this setting's type.

        Raises:
            ImproperlyConfigured: It is of the wrong type or out of bounds.
        """

    def _refuse(self, value: object, hint: str = "") -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"PGPUBSUB[{self.name!r}] must be {self.kind}, not {value!r}.{hint}"
        )


def _is_number(value: object) -> TypeGuard[int | float]:
    # bool is an int, and inf or NaN would reach select() and sleep().
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Seconds(Setting[float]):
    """A finite number of seconds, greater than ``above`` and at most ``at_most``."""

    above: float = 0.0
    at_most: float | None = None

    @property
    def kind(self) -> str:
        bound = "" if self.at_most is None else f" and at most {self.at_most:g}"
        return f"a number of seconds greater than {self.above:g}{bound}"

    def validate(self, value: object) -> float:
        if (
            not _is_number(value)
            or value <= self.above
            or (self.at_most is not None and value > self.at_most)
        ):
            raise self._refuse(value)
        return float(value)


@dataclass(frozen=True)
class SecondsOrNone(Setting["float | None"]):
    """A finite number of seconds greater than 0, or ``None`` for no limit."""

    @property
    def kind(self) -> str:
        return "a number of seconds greater than 0, or None"

    @property
    def default_text(self) -> str:
        return "``None``: no limit" if self.default is None else super().default_text

    def validate(self, value: object) -> float | None:
        if value is None:
            return None
        if not _is_number(value) or value <= 0:
            raise self._refuse(value)
        return float(value)


@dataclass(frozen=True)
class Count(Setting[int]):
    """An ``int`` of at least ``at_least``."""

    at_least: int = 1

    @property
    def kind(self) -> str:
        return f"an int of at least {self.at_least}"

    def validate(self, value: object) -> int:
        if not _is_number(value) or not isinstance(value, int) or value < self.at_least:
            raise self._refuse(value)
        return value


@dataclass(frozen=True)
class Limit(Setting["int | None"]):
    """A positive ``int``, or ``None`` for no limit."""

    @property
    def kind(self) -> str:
        return "a positive int or None"

    @property
    def default_text(self) -> str:
        return "``None``: no limit" if self.default is None else super().default_text

    def validate(self, value: object) -> int | None:
        if value is None:
            return None
        if not _is_number(value) or not isinstance(value, int) or value < 1:
            raise self._refuse(value)
        return value


@dataclass(frozen=True)
class Alias(Setting["str | None"]):
    """A key of ``settings.DATABASES``; ``None`` too where ``none_means`` says what it means."""

    none_means: str = ""

    @property
    def kind(self) -> str:
        return "a database alias" + (" or None" if self.none_means else "")

    @property
    def default_text(self) -> str:
        if self.default is None:
            return f"``None``: {self.none_means}"
        return super().default_text

    def validate(self, value: object) -> str | None:
        if value is None and self.none_means:
            return None
        if not isinstance(value, str) or not value:
            raise self._refuse(value)
        return value


@dataclass(frozen=True)
class ModuleNames(Setting["tuple[str, ...]"]):
    """A list or tuple of module names."""

    @property
    def kind(self) -> str:
        return "a list of module names"

    def validate(self, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            raise self._refuse(value, f" Write [{value!r}].")
        if not isinstance(value, list | tuple) or not all(
            isinstance(name, str) and name for name in value
        ):
            raise self._refuse(value)
        return tuple(value)


@dataclass(frozen=True)
class Choice(Setting[str]):
    """One of a few strings."""

    choices: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "one of " + ", ".join(repr(choice) for choice in self.choices)

    def validate(self, value: object) -> str:
        if value not in self.choices:
            raise self._refuse(value)
        return str(value)


@dataclass(frozen=True)
class Flag(Setting[bool]):
    """True or False."""

    @property
    def kind(self) -> str:
        return "True or False"

    def validate(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise self._refuse(value)
        return value
