from __future__ import annotations

from django.contrib import admin
from django.urls import path

from tests.testapp.views import create_order, sell_items

urlpatterns = [
    path("orders/", create_order),
    path("items/sell/", sell_items),
    path("admin/", admin.site.urls),
]
