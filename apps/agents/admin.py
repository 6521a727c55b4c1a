from django.contrib import admin
from django.db.models import F

from apps.agents.models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "public_id", "owner", "model_provider", "model_id", "visibility", "version", "enabled")
    list_filter = ("visibility", "enabled", "model_provider")
    search_fields = ("name", "public_id", "owner__username")
    readonly_fields = ("public_id", "version", "created_at", "updated_at")
    filter_horizontal = ("shared_with",)

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        if change:
            # an edit in the admin must invalidate warm pools like an API edit does
            obj.version = F("version") + 1
        super().save_model(request, obj, form, change)
        obj.refresh_from_db()
