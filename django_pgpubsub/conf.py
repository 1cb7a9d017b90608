"""Settings, each declared once, read lazily from ``settings.PGPUBSUB``.

A declaration holds a setting's name, type, default, bounds and help. It is
also its accessor: ``conf.keepalive_interval()`` reads and checks the current
value, so ``override_settings`` works. The system check (E002) validates every
declaration, and README.rst's Settings section is rendered from them
(``scripts/readme_settings.py``; a test keeps the two equal).

To add a setting, declare it below with the kind that fits (``Seconds``,
``Count``, ``Limit``, ``Alias``, ``ModuleNames``) and run
``python scripts/readme_settings.py --write``.
"""

from __future__ import annotations

import math
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
_cache: dict[str, Any] = {}


@receiver(setting_changed)
def _forget_cached(*, setting: str, **kwargs: Any) -> None:
    if setting in ("PGPUBSUB", "DEBUG"):
        _cache.clear()


def _configured() -> dict[str, Any]:
    configured = getattr(settings, "PGPUBSUB", None) or {}
    if not isinstance(configured, dict):
        raise ImproperlyConfigured("settings.PGPUBSUB must be a dict.")
    return configured


@dataclass(frozen=True)
class Setting(Generic[T]):
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
                return _cache[self.name]  # type: ignore[no-any-return]
            except KeyError:
                pass
        value = self.validate(_configured().get(self.name, self.default))
        if self.cached:
            _cache[self.name] = value
        return value

    @property
    def kind(self) -> str:
        """The type and bounds, in words (for the README and error messages)."""
        raise NotImplementedError

    @property
    def default_text(self) -> str:
        """The default, as the README shows it."""
        default: object = self.default
        if isinstance(default, tuple):
            default = list(default)  # what one writes in settings
        return "``" + repr(default).replace("'", '"') + "``"

    def validate(self, value: object) -> T:
        """Return ``value`` as this setting's type.

        Raises:
            ImproperlyConfigured: It is of the wrong type or out of bounds.
        """
        raise NotImplementedError

    def _refuse(self, value: object, hint: str = "") -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"PGPUBSUB[{self.name!r}] must be {self.kind}, not {value!r}.{hint}"
        )


def _is_number(value: object) -> TypeGuard[int | float]:
    # bool is an int, and inf or NaN would reach select() and sleep().
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Seconds(Setting[float]):
    """A finite number of seconds, greater than ``above``."""

    above: float = 0.0

    @property
    def kind(self) -> str:
        return f"a number of seconds greater than {self.above:g}"

    def validate(self, value: object) -> float:
        if not _is_number(value) or value <= self.above:
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


database_setting = Alias(
    "DATABASE",
    "default",
    "The alias ``notify()``, ``notify_many()`` and ``connect()`` use when "
    "``using`` is not given; also where the outbox of durable events is.",
    cached=True,
)
listener_database_setting = Alias(
    "LISTENER_DATABASE",
    None,
    "The alias ``listen_events`` listens on. Point it at a direct connection "
    "when ``DATABASE`` goes through PgBouncer in transaction pooling mode.",
    none_means="the ``DATABASE`` setting",
)
autodiscover_modules = ModuleNames(
    "AUTODISCOVER_MODULES",
    ("pubsub",),
    "Modules imported from every installed app at start-up.",
)
keepalive_interval = Seconds(
    "KEEPALIVE_INTERVAL",
    5.0,
    "Idle time after which the listener probes its connection with a "
    "notification to itself (it must come back within half this time); also "
    "its TCP keepalive interval.",
)
reconnect_initial_delay = Seconds(
    "RECONNECT_INITIAL_DELAY",
    0.25,
    "Delay before the second connection attempt; it doubles each time.",
)
reconnect_max_delay = Seconds(
    "RECONNECT_MAX_DELAY",
    30.0,
    "Cap of that delay. Each wait is jittered between half and all of it.",
)
reconnect_max_attempts = Limit(
    "RECONNECT_MAX_ATTEMPTS",
    None,
    "Failed attempts after which the listener gives up and raises "
    "``ConnectionLost`` (``listen_events`` then exits non-zero).",
)
durable_poll_interval = Seconds(
    "DURABLE_POLL_INTERVAL",
    5.0,
    "How often an idle listener looks for due durable events (retries, or "
    "events whose wake-up it missed).",
)
durable_batch_size = Count(
    "DURABLE_BATCH_SIZE",
    100,
    "Durable events a listener claims at a time. It holds the ones waiting for "
    "their turn (renewing their leases) until it has handled all of the claim: "
    "lower this for slow handlers, so that other listeners share the work.",
)
durable_max_attempts = Count(
    "DURABLE_MAX_ATTEMPTS",
    5,
    "Attempts after which a durable event stays ``failed``.",
)
durable_retry_delay = Seconds(
    "DURABLE_RETRY_DELAY",
    2.0,
    "Delay before the first retry of a failed durable event; it doubles.",
)
durable_retry_max_delay = Seconds(
    "DURABLE_RETRY_MAX_DELAY",
    600.0,
    "Cap of that delay.",
)
durable_wakeup = Choice(
    "DURABLE_WAKEUP",
    "notify",
    'How listeners learn of new durable events. ``"notify"``: each transaction '
    "that stores some sends one NOTIFY per channel, and listeners claim at once. "
    '``"poll"``: writers only insert rows (no NOTIFY, so no commit-time lock), '
    "and listeners probe the outbox every ``DURABLE_PROBE_INTERVAL``. Set it alike "
    "for writers and listeners (see `Scaling writers and listeners`_).",
    cached=True,
    choices=("notify", "poll"),
)
durable_probe_interval = Seconds(
    "DURABLE_PROBE_INTERVAL",
    0.5,
    'With ``DURABLE_WAKEUP = "poll"``, how often a listener probes the outbox '
    "for due events of its channels (an index-only query).",
)
durable_lease = Seconds(
    "DURABLE_LEASE",
    60.0,
    "How long a listener may run one durable event's handlers before another "
    "listener takes the event back (see `How durable events are handled`_). "
    "Claims of a listener whose database session is gone come back sooner, at "
    "the next sweep.",
)


def database() -> str:
    """The alias ``notify()`` and ``connect()`` use by default (cached)."""
    try:
        return str(_cache["DATABASE"])
    except KeyError:
        return str(database_setting())


def listener_database() -> str:
    """The alias ``listen_events`` connects to: ``LISTENER_DATABASE`` or ``DATABASE``."""
    return listener_database_setting() or database()


def debug() -> bool:
    """``settings.DEBUG`` (cached, as above): whether Django logs queries."""
    try:
        return bool(_cache["DEBUG"])
    except KeyError:
        value = _cache["DEBUG"] = bool(settings.DEBUG)
        return value


def problems() -> list[str]:
    """Every mistake in ``settings.PGPUBSUB``, one message each (for E002)."""
    try:
        configured = _configured()
    except ImproperlyConfigured as exc:
        return [str(exc)]
    found = []
    unknown = set(configured) - set(DECLARED)
    if unknown:
        found.append(
            f"Unknown PGPUBSUB setting(s) {sorted(unknown)}; the settings are {sorted(DECLARED)}."
        )
    for declaration in DECLARED.values():
        if declaration.name in configured:
            try:
                declaration.validate(configured[declaration.name])
            except ImproperlyConfigured as exc:
                found.append(str(exc))
    return found
