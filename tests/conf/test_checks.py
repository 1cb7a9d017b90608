"""System checks against real settings."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core import checks
from django.test import override_settings

from django_pgpubsub.checks import check_databases, check_settings
from django_pgpubsub.db.connection import listening_options, open_connection


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


def test_keepalive_interval_above_what_linux_accepts_is_e002() -> None:
    """Linux refuses a TCP_KEEPIDLE above 32767 s: no listening connection would open."""
    with override_settings(PGPUBSUB={"KEEPALIVE_INTERVAL": 32768}):
        [error] = check_settings()
    assert error.id == "django_pgpubsub.E002"
    assert "at most 32767" in error.msg
    assert "32768" in error.msg


@pytest.mark.django_db(transaction=True)
def test_the_largest_keepalive_interval_still_opens_a_listening_connection() -> None:
    with override_settings(PGPUBSUB={"KEEPALIVE_INTERVAL": 32767}):
        assert check_settings() == []
        connection = open_connection(default_options=listening_options("keepalive test"))
    try:
        assert connection.pid > 0
    finally:
        connection.close()
