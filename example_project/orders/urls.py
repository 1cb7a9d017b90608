from __future__ import annotations

from django.urls import path

from orders import views

urlpatterns = [
    path("", views.index, name="index"),
    path("checkout/", views.checkout, name="checkout"),
    path("orders/<int:pk>/ship/", views.ship, name="ship"),
    path("orders/<int:pk>/cancel/", views.cancel, name="cancel"),
    path("activity/", views.activity, name="activity"),
    path("orders/list/", views.order_list, name="order-list"),
    path("activity/stream/", views.ShopStream.as_view(), name="activity-stream"),
]
