"""The event stream the fan-out benchmark's clients read."""

from __future__ import annotations

from django.urls import path

from django_pgpubsub.views import EventStreamView

urlpatterns = [path("events/", EventStreamView.as_view(channels=["bench.fanout"]))]
