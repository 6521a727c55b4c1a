from django.contrib import admin

from apps.accounts.models import ApiToken, UserQuota


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("prefix", "digest", "created_at", "last_used_at")


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    """A user's own limits where they differ from AGENTOS_USER_MAX_RUNNING / AGENTOS_USER_MAX_QUEUED
    (empty: the deployment's default; max running 0: no limit)."""
    list_display = ("user", "max_running", "max_queued")
    search_fields = ("user__username",)
    autocomplete_fields = ("user",)
