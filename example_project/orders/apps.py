from __future__ import annotations

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self) -> None:
        # Connects announce_status (post_save of Order), once the models exist.
        from orders import signals  # noqa: F401, PLC0415 - imported for its receiver
