"""The jobs in the admin, with what a paused run waited for and who decided it.

Decisions are the audit of human-in-the-loop (apps.jobs.actions): the admin
shows them and never adds or edits one; a decision is made by the job's owner
(or staff, recorded as an override) through the API or the web, where the
checks and the run's continuation live.

Failed jobs are the dead letters: filtered by error code and by when they
ended, the retryable ones among those selected are retried in one action
(apps.jobs.services.job_retry; each retry belongs to the job's owner)."""
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.common import DomainError
from apps.jobs.models import ActionDecision, Job, JobAction, RunPause
from apps.jobs.retryable import job_retryable
from apps.jobs.services import job_retry

DECISION_FIELDS = ("decision", "decided_by", "decided_at", "note", "arguments_before", "arguments_after", "values",
                   "staff_override")


class ReadOnlyInline(admin.TabularInline):
    """Rows written by the run and its decisions only: shown, never added, edited or removed here."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class JobActionInline(ReadOnlyInline):
    model = JobAction
    fields = ("public_id", "type", "tool", "arguments", "status", "created_at", "executions")
    readonly_fields = fields


class RunPauseInline(ReadOnlyInline):
    model = RunPause
    fields = ("number", "created_at", "expires_at", "resumed_at")
    readonly_fields = fields


class ActionDecisionInline(admin.StackedInline):
    model = ActionDecision
    fields = DECISION_FIELDS
    readonly_fields = DECISION_FIELDS
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("public_id", "kind", "status", "error_code", "owner", "agent", "attempts", "created_at",
                    "finished_at", "retry_of")
    list_filter = ("kind", "status", "error_code", "finished_at")
    list_select_related = ("owner", "agent", "retry_of")
    date_hierarchy = "finished_at"
    search_fields = ("public_id", "owner__username", "session__public_id")
    # retry_of as a read-only link: an editable one would be a select listing every job
    readonly_fields = ("public_id", "created_at", "enqueued_at", "started_at", "finished_at", "lease_token",
                       "lease_expires_at", "worker", "retry_of")
    inlines = (RunPauseInline, JobActionInline)
    actions = ("retry_failed",)

    @admin.action(description="Retry selected failed jobs", permissions=("change",))
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        """Each retryable failed job once, each in its own transaction: one that cannot be
        retried now (already retried, its agent gone) is skipped, not a reason to undo the rest."""
        retried, skipped = 0, 0
        for job in queryset.order_by("id"):
            if not job_retryable(job):
                skipped += 1
                continue
            try:
                job_retry(job=job)
            except DomainError:
                skipped += 1
            else:
                retried += 1
        self.message_user(request, f"Retried {retried} failed job{'s' if retried != 1 else ''}; skipped {skipped} "
                          "(not failed, not retryable, already retried, or their agent is gone).",
                          messages.SUCCESS if retried else messages.WARNING)


@admin.register(RunPause)
class RunPauseAdmin(admin.ModelAdmin):
    """A stop of a run: when, until when, and when it was continued (its stored run state read-only)."""

    list_display = ("job", "number", "created_at", "expires_at", "resumed_at")
    list_select_related = ("job",)
    search_fields = ("job__public_id",)
    readonly_fields = ("job", "number", "run_state", "created_at", "expires_at", "resumed_at")
    inlines = (JobActionInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(JobAction)
class JobActionAdmin(admin.ModelAdmin):
    """A tool call that waited for a person, with its decision inline."""

    list_display = ("public_id", "job", "type", "tool", "status", "created_at")
    list_filter = ("type", "status", "tool")
    list_select_related = ("job",)
    search_fields = ("public_id", "job__public_id", "job__owner__username")
    readonly_fields = ("public_id", "job", "pause", "requirement_id", "tool_call_id", "type", "tool", "arguments",
                       "fields", "status", "created_at", "run_started_at", "run_result", "executions")
    inlines = (ActionDecisionInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ActionDecision)
class ActionDecisionAdmin(admin.ModelAdmin):
    """The audit: who decided what, when, with which note and arguments; read-only."""

    list_display = ("action", "decision", "decided_by", "decided_at", "staff_override")
    list_filter = ("decision", "staff_override")
    list_select_related = ("action", "decided_by")
    search_fields = ("action__public_id", "action__job__public_id", "decided_by__username")
    fields = ("action", *DECISION_FIELDS)
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
