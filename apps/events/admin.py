from __future__ import annotations

from django.contrib import admin

from apps.events.models import JobEvent


@admin.register(JobEvent)
class JobEventAdmin(admin.ModelAdmin):
    list_display = ("job", "seq", "type", "created_at")
    list_filter = ("type",)
    search_fields = ("job__public_id",)
    list_select_related = ("job",)
    readonly_fields = ("job", "seq", "type", "data", "created_at")

    def has_add_permission(self, request: object) -> bool:
        return False
