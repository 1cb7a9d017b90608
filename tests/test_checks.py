"""System checks against real settings."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core import checks
from django.test import override_settings

from django_pgpubsub.checks import check_databases, check_settings


def test_postgresql_passes() -> None:
    assert check_databases() == []
    assert check_settings() == []


@pytest.mark.slow  # a process
def test_non_postgresql_database_is_e001() -> None:
    # A real `manage.py check` run, with settings that point at SQLite.
    result = subprocess.run(
        [sys.executable, "-m", "django", "check", "--settings", "tests.settings_sqlite"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "django_pgpubsub.E001" in result.stderr
    assert "uses sqlite" in result.stderr
    assert "HINT: Point PGPUBSUB['DATABASE']" in result.stderr


def test_unknown_alias_is_e001() -> None:
    with override_settings(PGPUBSUB={"LISTENER_DATABASE": "missing"}):
        [error] = check_databases()
    assert error.id == "django_pgpubsub.E001"
    assert "'missing'" in error.msg


def test_bad_setting_is_e002() -> None:
    with override_settings(PGPUBSUB={"KEEPALIVE_INTERVAL": -1}):
        [error] = check_settings()
    assert error.id == "django_pgpubsub.E002"


def test_checks_are_registered() -> None:
    registered = checks.registry.registry.get_checks()
    assert check_databases in registered
    assert check_settings in registered
