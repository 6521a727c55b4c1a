from django.contrib import admin

from apps.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("public_id", "kind", "status", "owner", "agent", "attempts", "created_at", "finished_at")
    list_filter = ("kind", "status")
    search_fields = ("public_id", "owner__username", "session__public_id")
    readonly_fields = ("public_id", "created_at", "enqueued_at", "started_at", "finished_at", "lease_token",
                       "lease_expires_at", "worker")
