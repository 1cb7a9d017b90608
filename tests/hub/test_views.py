"""EventStreamView's configuration, in process (tests/test_sse*.py serve it with uvicorn)."""

from __future__ import annotations

import math
import urllib.parse

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_pgpubsub import conf
from django_pgpubsub.checks import check_settings
from django_pgpubsub.ops.metrics import ListenerMetrics, serve
from django_pgpubsub.views import EventStreamView

HOSTILE_QUERY = urllib.parse.quote("<img src=x onerror=alert(1)>")


def test_a_str_of_channels_is_refused_in_as_view_and_in_a_subclass() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"not the str 'orders'.*Write \['orders'\]"):
        EventStreamView.as_view(channels="orders")

    class Orders(EventStreamView):
        channels = "orders"

    with pytest.raises(ImproperlyConfigured, match=r"Orders\.as_view"):
        Orders.as_view()
    with pytest.raises(ImproperlyConfigured, match="list of channel names"):
        EventStreamView.as_view(channels=3)
    EventStreamView.as_view(channels=("orders",))  # a tuple or a list


def test_sse_max_age_is_none_by_default_and_takes_positive_seconds() -> None:
    assert conf.sse_max_age() is None
    for value in (30, 0.5):
        with override_settings(PGPUBSUB={"SSE_MAX_AGE": value}):
            assert conf.sse_max_age() == value
            assert check_settings() == []
    for wrong in (0, -1, math.inf, math.nan, True, "60"):
        with override_settings(PGPUBSUB={"SSE_MAX_AGE": wrong}):
            [error] = check_settings()
            assert "PGPUBSUB['SSE_MAX_AGE'] must be a number of seconds greater than 0" in error.msg


@pytest.mark.django_db(transaction=True)
def test_the_metrics_server_echoes_nothing_of_a_hostile_request_and_is_plain_text() -> None:
    # Audited with EventStreamView's refusals: every HTTP answer the package builds.
    server = serve(ListenerMetrics("default"), 0, "127.0.0.1")
    try:
        base = server.url.removesuffix("/metrics")
        for path in ("/metrics?name[]=" + HOSTILE_QUERY, "/" + HOSTILE_QUERY):
            response = httpx.get(base + path, timeout=10)
            assert response.headers["content-type"].startswith("text/plain"), path
            assert "<img" not in response.text
            assert "onerror" not in response.text
    finally:
        server.close()
