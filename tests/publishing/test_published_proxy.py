"""The proxy model that publish_changes() makes for a model of another app
(tests/testapp/pubsub.py publishes auth's Permission) is a model like any
other: no system check, nor Django 5.2's shell, has anything to say of it."""

from __future__ import annotations

import django
import pytest
from django.apps import apps
from django.core import checks
from django.core.management import call_command

from tests.testapp import pubsub


def test_the_proxy_is_importable_where_its_module_says() -> None:
    proxy = apps.get_model("testapp", "PublishedPermission")
    assert proxy.__module__ == "tests.testapp.pubsub"
    assert pubsub.PublishedPermission is proxy  # type: ignore[attr-defined]


def test_the_system_checks_find_nothing_in_the_test_project() -> None:
    assert checks.run_checks() == []
    call_command("check", fail_level="DEBUG")  # raises on any message


@pytest.mark.skipif(django.VERSION < (5, 2), reason="the shell imports models since Django 5.2")
def test_the_shell_imports_every_model_without_a_word(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("shell", command="print(PublishedPermission._meta.label)", verbosity=1)
    output = capsys.readouterr()
    assert "could not be automatically imported" not in output.out + output.err
    assert "testapp.PublishedPermission" in output.out
