from __future__ import annotations

from django.contrib import admin
from django.urls import path

from django_pgpubsub.views import EventStreamView
from tests.testapp.streams import (
    SignedInAsync,
    SignedInSync,
    SyncAuthorized,
    TestStream,
    hub_state,
    stream_page,
    whoami,
)
from tests.testapp.views import create_order, sell_items

urlpatterns = [
    path("orders/", create_order),
    path("items/sell/", sell_items),
    path("admin/", admin.site.urls),
    path("events/", TestStream.as_view()),
    path("events/plain/", EventStreamView.as_view(channels=["sse.a"])),
    path("events/token/", SyncAuthorized.as_view()),
    path("events/signed-in/", SignedInSync.as_view()),
    path("events/signed-in/async/", SignedInAsync.as_view()),
    # Streams end after 1 s; their reconnects are authorized afresh.
    path("events/short/", SignedInAsync.as_view(max_age=1)),
    path("whoami/", whoami),
    path("hub/", hub_state),
    path("stream-page/", stream_page),
]
