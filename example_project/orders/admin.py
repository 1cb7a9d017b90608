from __future__ import annotations

from django.contrib import admin

from orders.models import Activity, Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "customer", "item", "quantity", "status", "created_at")
    list_editable = ("status",)


@admin.register(Activity)
class ActivityAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "channel", "message", "sender_pid", "created_at")
