"""Admin for durable events: read-only, with retry and release actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from django_pgpubsub.models import OutboxEvent


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "id",
        "channel",
        "state",
        "attempts",
        "created_at",
        "available_at",
        "holder",
        "claimed_at",
        "lease_expires_at",
    )
    list_filter = ("state", "channel")
    search_fields = ("channel", "payload", "key")
    ordering = ("id",)
    actions = ("retry", "release")
    readonly_fields = (*(field.name for field in OutboxEvent._meta.fields), "holder")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("django_pgpubsub.change_outboxevent"))

    has_release_permission = has_retry_permission

    @admin.display(description="held by")
    def holder(self, obj: OutboxEvent) -> str:
        return obj.holder

    @admin.action(description="Retry the selected failed events", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        count = OutboxEvent.objects.using(queryset.db).filter(pk__in=queryset).retry()
        self.message_user(request, f"{count} failed event(s) will be retried.", messages.SUCCESS)

    @admin.action(description="Release the selected running events", permissions=["release"])
    def release(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        count = OutboxEvent.objects.using(queryset.db).filter(pk__in=queryset).release()
        self.message_user(request, f"{count} running event(s) released.", messages.SUCCESS)
