"""Admin for durable events: read-only, with a retry action for failed ones."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from django_pgpubsub.models import OutboxEvent
from django_pgpubsub.outbox import retry_failed


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "channel", "state", "attempts", "created_at", "available_at")
    list_filter = ("state", "channel")
    search_fields = ("channel", "payload")
    ordering = ("id",)
    actions = ("retry",)
    readonly_fields = tuple(field.name for field in OutboxEvent._meta.fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("django_pgpubsub.change_outboxevent"))

    @admin.action(description="Retry the selected failed events", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        count = retry_failed(ids=queryset.values_list("id", flat=True), using=queryset.db)
        self.message_user(request, f"{count} failed event(s) will be retried.", messages.SUCCESS)
