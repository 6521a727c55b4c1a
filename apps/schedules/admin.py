"""Every user's schedules, with their runs; pausing and resuming go through the services."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.common import DomainError
from apps.schedules.models import Schedule, ScheduleRun
from apps.schedules.services import schedule_pause, schedule_resume


class ScheduleRunInline(admin.TabularInline):
    model = ScheduleRun
    extra = 0
    can_delete = False
    ordering = ("-created_at",)
    fields = readonly_fields = ("public_id", "due_at", "trigger", "misfire", "missed", "status", "error_code",
                                "job", "created_at")
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("public_id", "name", "owner", "agent_public_id", "cron", "interval_seconds", "timezone",
                    "enabled", "paused_reason", "next_run_at", "last_run_at")
    list_filter = ("enabled", "paused_reason", "misfire", "timezone")
    search_fields = ("public_id", "name", "owner__username", "agent_public_id", "message")
    raw_id_fields = ("owner", "agent", "session")
    readonly_fields = ("public_id", "agent_public_id", "session_public_id", "next_run_at", "last_run_at",
                       "paused_reason", "created_at", "updated_at")
    inlines = [ScheduleRunInline]
    actions = ["pause", "resume"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a schedule is checked as a whole (cron, timezone, agent access): the API and the web page

    @admin.action(description="Pause the selected schedules")
    def pause(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            schedule_pause(schedule=schedule)
        self.message_user(request, f"Paused {queryset.count()} schedule(s).")

    @admin.action(description="Resume the selected schedules (from now on)")
    def resume(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        refused = 0
        for schedule in queryset:
            try:
                schedule_resume(schedule=schedule)
            except DomainError as exc:  # its agent is gone or out of reach: say so, go on
                refused += 1
                self.message_user(request, f"{schedule.public_id}: {exc}", level=messages.WARNING)
        self.message_user(request, f"Resumed {queryset.count() - refused} schedule(s).")


@admin.register(ScheduleRun)
class ScheduleRunAdmin(admin.ModelAdmin):
    list_display = ("public_id", "schedule", "due_at", "trigger", "misfire", "missed", "status", "job", "created_at")
    list_filter = ("trigger", "status", "misfire")
    search_fields = ("public_id", "schedule__public_id", "job__public_id")
    readonly_fields = [field.name for field in ScheduleRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
