"""Settings, read lazily from ``settings.PGPUBSUB`` so ``override_settings`` works.

Every setting has a default; ``PGPUBSUB`` itself is optional::

    PGPUBSUB = {
        "DATABASE": "default",
        "LISTENER_DATABASE": None,        # falls back to DATABASE
        "AUTODISCOVER_MODULES": ["pubsub"],
        "KEEPALIVE_INTERVAL": 5.0,
        "RECONNECT_INITIAL_DELAY": 0.25,
        "RECONNECT_MAX_DELAY": 30.0,
        "RECONNECT_MAX_ATTEMPTS": None,   # None: forever
        "DURABLE_POLL_INTERVAL": 5.0,
        "DURABLE_BATCH_SIZE": 100,
        "DURABLE_MAX_ATTEMPTS": 5,
        "DURABLE_RETRY_DELAY": 2.0,
        "DURABLE_RETRY_MAX_DELAY": 600.0,
        "DURABLE_LEASE": 60.0,
    }
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    "DATABASE": "default",
    "LISTENER_DATABASE": None,
    "AUTODISCOVER_MODULES": ("pubsub",),
    "KEEPALIVE_INTERVAL": 5.0,
    "RECONNECT_INITIAL_DELAY": 0.25,
    "RECONNECT_MAX_DELAY": 30.0,
    "RECONNECT_MAX_ATTEMPTS": None,
    "DURABLE_POLL_INTERVAL": 5.0,
    "DURABLE_BATCH_SIZE": 100,
    "DURABLE_MAX_ATTEMPTS": 5,
    "DURABLE_RETRY_DELAY": 2.0,
    "DURABLE_RETRY_MAX_DELAY": 600.0,
    "DURABLE_LEASE": 60.0,
}


def _configured() -> dict[str, Any]:
    configured = getattr(settings, "PGPUBSUB", None) or {}
    if not isinstance(configured, dict):
        raise ImproperlyConfigured("settings.PGPUBSUB must be a dict.")
    return configured


def _get(name: str) -> Any:
    return _configured().get(name, DEFAULTS[name])


# notify() needs DATABASE and DEBUG on every call, and reading Django's lazy
# settings costs a noticeable share of a round trip. Cached, and forgotten when
# override_settings() (anything that sends setting_changed) changes them;
# Django asks that settings not be altered otherwise at run time.
_cache: dict[str, Any] = {}


@receiver(setting_changed)
def _forget_cached(*, setting: str, **kwargs: Any) -> None:
    if setting in ("PGPUBSUB", "DEBUG"):
        _cache.clear()


def check_names() -> None:
    """Raise ImproperlyConfigured for a misspelt PGPUBSUB key (run by the system check)."""
    unknown = set(_configured()) - set(DEFAULTS)
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown PGPUBSUB setting(s) {sorted(unknown)}; the settings are {sorted(DEFAULTS)}."
        )


def _positive_number(name: str) -> float:
    value = _get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ImproperlyConfigured(
            f"PGPUBSUB[{name!r}] must be a positive number of seconds, not {value!r}."
        )
    return float(value)


def database() -> str:
    """Alias that ``notify()`` and ``connect()`` use by default. Default ``"default"``."""
    try:
        return str(_cache["DATABASE"])
    except KeyError:
        value = _cache["DATABASE"] = str(_get("DATABASE"))
        return value


def debug() -> bool:
    """``settings.DEBUG`` (cached, as above): whether Django logs queries."""
    try:
        return bool(_cache["DEBUG"])
    except KeyError:
        value = _cache["DEBUG"] = bool(settings.DEBUG)
        return value


def listener_database() -> str:
    """Alias ``listen_events`` connects to. Default: the ``DATABASE`` setting.

    Point it at a direct connection when ``DATABASE`` goes through PgBouncer in
    transaction pooling mode, which cannot LISTEN.
    """
    return str(_get("LISTENER_DATABASE") or database())


def autodiscover_modules() -> tuple[str, ...]:
    """Module names imported from every installed app at start-up. Default ``("pubsub",)``."""
    value = _get("AUTODISCOVER_MODULES")
    if isinstance(value, str):
        raise ImproperlyConfigured(
            "PGPUBSUB['AUTODISCOVER_MODULES'] must be a list of module names, "
            f"not the string {value!r}; write [{value!r}]."
        )
    return tuple(value)


def keepalive_interval() -> float:
    """Idle seconds after which the listener checks its connection. Default 5."""
    return _positive_number("KEEPALIVE_INTERVAL")


def reconnect_initial_delay() -> float:
    """Seconds before the first reconnection attempt. Default 0.25."""
    return _positive_number("RECONNECT_INITIAL_DELAY")


def reconnect_max_delay() -> float:
    """Cap on the doubling delay between reconnection attempts. Default 30."""
    return _positive_number("RECONNECT_MAX_DELAY")


def _positive_int(name: str) -> int:
    value = _get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"PGPUBSUB[{name!r}] must be a positive int, not {value!r}.")
    return value


def durable_poll_interval() -> float:
    """Seconds between the listener's sweeps of the outbox, besides wake-ups. Default 5."""
    return _positive_number("DURABLE_POLL_INTERVAL")


def durable_batch_size() -> int:
    """Durable events claimed per transaction. Default 100."""
    return _positive_int("DURABLE_BATCH_SIZE")


def durable_max_attempts() -> int:
    """Attempts before a durable event is left as failed. Default 5."""
    return _positive_int("DURABLE_MAX_ATTEMPTS")


def durable_retry_delay() -> float:
    """Seconds before the first retry of a failed durable event; it doubles. Default 2."""
    return _positive_number("DURABLE_RETRY_DELAY")


def durable_retry_max_delay() -> float:
    """Cap on the delay between retries of a durable event. Default 600."""
    return _positive_number("DURABLE_RETRY_MAX_DELAY")


def durable_lease() -> float:
    """Seconds a listener holds a claimed durable event before others may take it. Default 60.

    Renewed while the listener makes progress; a handler running longer than
    this has its event claimed again by another listener.
    """
    return _positive_number("DURABLE_LEASE")


def reconnect_max_attempts() -> int | None:
    """Failed reconnection attempts before the listener gives up. Default ``None``: never."""
    value = _get("RECONNECT_MAX_ATTEMPTS")
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ImproperlyConfigured(
            f"PGPUBSUB['RECONNECT_MAX_ATTEMPTS'] must be a positive int or None, not {value!r}."
        )
    return value
