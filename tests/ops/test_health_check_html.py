"""What docs/operations.rst says of django-health-check 4's HTML page: it
needs "health_check" in INSTALLED_APPS (its templates live there)."""

from __future__ import annotations

import importlib.util

import pytest
from asgiref.sync import async_to_sync
from django.template import TemplateDoesNotExist
from django.template.response import TemplateResponse
from django.test import RequestFactory, modify_settings

pytest.importorskip("health_check")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        importlib.util.find_spec("health_check.base") is None,
        reason="django-health-check 3 here (Django 4.2)",
    ),
]


def html_page() -> str:
    from health_check.views import HealthCheckView

    view = HealthCheckView.as_view(checks=["django_pgpubsub.contrib.health_check.PubSub"])
    response = async_to_sync(view)(RequestFactory().get("/ht/", HTTP_ACCEPT="text/html"))
    assert isinstance(response, TemplateResponse)
    return str(response.render().content.decode())


def test_without_health_check_in_installed_apps_the_html_page_fails() -> None:
    with pytest.raises(TemplateDoesNotExist):
        html_page()


def test_with_health_check_in_installed_apps_the_html_page_renders() -> None:
    with modify_settings(INSTALLED_APPS={"append": "health_check"}):
        page = html_page()
    assert "PubSub" in page
