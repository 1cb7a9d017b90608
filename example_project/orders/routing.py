"""Websocket URLs, served by Channels (config/asgi.py)."""

from __future__ import annotations

from django.urls import path

from orders.consumers import OrderStatusConsumer

websocket_urlpatterns = [
    path("ws/orders/<int:pk>/", OrderStatusConsumer.as_asgi()),
]
