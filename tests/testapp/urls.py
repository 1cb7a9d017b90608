from __future__ import annotations

from django.contrib import admin
from django.urls import path

from django_pgpubsub.views import EventStreamView
from tests.testapp.streams import SyncAuthorized, TestStream, hub_state, stream_page
from tests.testapp.views import create_order, sell_items

urlpatterns = [
    path("orders/", create_order),
    path("items/sell/", sell_items),
    path("admin/", admin.site.urls),
    path("events/", TestStream.as_view()),
    path("events/plain/", EventStreamView.as_view(channels=["sse.a"])),
    path("events/token/", SyncAuthorized.as_view()),
    path("hub/", hub_state),
    path("stream-page/", stream_page),
]
