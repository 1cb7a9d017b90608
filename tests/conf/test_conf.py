"""Settings: declared once in conf.py; accessors, the E002 check and the docs agree."""

from __future__ import annotations

import math
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_pgpubsub import conf
from django_pgpubsub.checks import check_settings
from scripts import docs_settings

NUMERIC = [
    s for s in conf.DECLARED.values() if isinstance(s, conf.Seconds | conf.Count | conf.Limit)
]


def test_docs_settings_page_is_rendered_from_the_declarations() -> None:
    assert docs_settings.current() == docs_settings.render(), (
        "docs/settings.rst is stale: run python scripts/docs_settings.py --write"
    )


def test_every_setting_is_declared_once_with_a_valid_default() -> None:
    assert len(conf.DECLARED) >= 12
    for name, setting in conf.DECLARED.items():
        assert setting.name == name
        assert setting.help
        assert setting.validate(setting.default) == setting.default
    with pytest.raises(ValueError, match="declared twice"):
        conf.Count("DURABLE_BATCH_SIZE", 1, "again")


def test_defaults_and_overrides_are_read_lazily() -> None:
    with override_settings(PGPUBSUB={}):
        assert conf.database() == "default"
        assert conf.listener_database() == "default"
        assert conf.autodiscover_modules() == ("pubsub",)
        assert conf.reconnect_max_attempts() is None
        assert conf.durable_batch_size() == 100
    with override_settings(PGPUBSUB={"DATABASE": "other", "KEEPALIVE_INTERVAL": 2}):
        assert conf.database() == "other"
        assert conf.listener_database() == "other"
        assert conf.keepalive_interval() == 2.0
        with override_settings(PGPUBSUB={"LISTENER_DATABASE": "direct"}):
            assert conf.database() == "default"  # the cache was forgotten
            assert conf.listener_database() == "direct"
    assert conf.database() == "default"


def test_debug_is_cached_and_forgotten_on_change() -> None:
    assert conf.debug() is False
    with override_settings(DEBUG=True):
        assert conf.debug() is True
    assert conf.debug() is False


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, True, False, "5", 0, -1])
def test_e002_refuses_what_is_not_a_finite_number_in_bounds(
    setting: conf.Setting[Any], value: object
) -> None:
    with override_settings(PGPUBSUB={setting.name: value}):
        [error] = check_settings()
        assert error.id == "django_pgpubsub.E002"
        assert f"PGPUBSUB[{setting.name!r}] must be {setting.kind}" in error.msg
        with pytest.raises(ImproperlyConfigured):
            setting()


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
def test_numeric_settings_take_ints_and_floats_in_bounds(setting: conf.Setting[Any]) -> None:
    value = 3 if isinstance(setting, conf.Count | conf.Limit) else 0.5
    with override_settings(PGPUBSUB={setting.name: value}):
        assert check_settings() == []
        assert setting() == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"KEEPALIVE": 1}, "Unknown PGPUBSUB setting(s) ['KEEPALIVE']"),
        ({"AUTODISCOVER_MODULES": "pubsub"}, "Write ['pubsub']"),
        ({"AUTODISCOVER_MODULES": ["a", 1]}, "a list of module names"),
        ({"DATABASE": ""}, "must be a database alias, not ''"),
        ({"DATABASE": None}, "must be a database alias, not None"),
        ({"RECONNECT_MAX_ATTEMPTS": 1.5}, "a positive int or None, not 1.5"),
    ],
)
def test_e002_says_how_to_fix(value: dict[str, object], message: str) -> None:
    with override_settings(PGPUBSUB=value):
        [error] = check_settings()
    assert message in error.msg


def test_e002_reports_every_bad_setting() -> None:
    bad = {"KEEPALIVE_INTERVAL": math.inf, "DURABLE_BATCH_SIZE": True, "NOPE": 1}
    with override_settings(PGPUBSUB=bad):
        messages = [error.msg for error in check_settings()]
    assert len(messages) == 3
    assert "Unknown" in messages[0]


def test_pgpubsub_must_be_a_dict() -> None:
    with override_settings(PGPUBSUB=[("DATABASE", "default")]):
        [error] = check_settings()
        assert error.msg == "settings.PGPUBSUB must be a dict."
        with pytest.raises(ImproperlyConfigured, match="must be a dict"):
            conf.keepalive_interval()
