from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.common import public_id


def _job_id() -> str:
    return public_id("job")


class Job(models.Model):
    """One unit of background work; the row, not the broker, is the source of truth."""

    class Kind(models.TextChoices):
        MESSAGE = "message"
        SYNC = "sync"
        INGEST = "ingest"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        # the run paused for a person (apps.jobs.actions): it holds no worker and no lease, only rows
        REQUIRES_ACTION = "requires_action"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.EXPIRED)

    class Priority(models.IntegerChoices):
        """Orders one user's own waiting jobs (apps.jobs.admission); never another user's."""
        LOW = 0, "low"
        NORMAL = 1, "normal"
        HIGH = 2, "high"

    public_id = models.CharField(max_length=40, unique=True, default=_job_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.MESSAGE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="jobs")
    session = models.ForeignKey("chat.ChatSession", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="jobs")
    input = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    # fencing token of the attempt that holds the job; a stale attempt's writes are refused
    lease_token = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")
    # where the signed `job.<status>` event is POSTed when the job ends (apps.webhooks)
    callback_url = models.URLField(max_length=2000, blank=True, default="")
    # past this instant an unfinished job ends `expired`
    deadline_at = models.DateTimeField(null=True, blank=True)
    # set by cancel on a running job: the worker stops at its next safe point, writes no reply
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # the number of the job's last event (apps.events): bumped under the row lock
    # by the UPDATE that numbers the next one, so event numbers are gapless
    event_seq = models.PositiveIntegerField(default=0)
    # how many times its run paused for a person (apps.jobs.actions); 0: it has no actions to show
    pauses = models.PositiveSmallIntegerField(default=0)
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    # the failed job this one runs again (POST jobs/<id>/retry/)
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    # the accepting request's span, as a W3C traceparent: every later span of the job is in its trace (apps.tracing)
    trace_context = models.CharField(max_length=55, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"]),
            models.Index(fields=["session", "id"]),
            models.Index(fields=["status", "enqueued_at"]),
            # a user's unfinished jobs: the admission window and the queue caps count them on every send
            models.Index(fields=["owner", "status", "-priority", "id"], name="jobs_job_owner_waiting",
                         condition=models.Q(status__in=["queued", "running"])),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.kind} {self.status}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def event_type(self) -> str:
        """The type of the event (and webhook) its current status is announced by."""
        return status_event_type(self.status)


def status_event_type(status: str) -> str:
    """`job.<status>`, except that a paused run is announced as `job.action_required`."""
    return ACTION_REQUIRED if status == Job.Status.REQUIRES_ACTION else f"job.{status}"


ACTION_REQUIRED = "job.action_required"


def _action_id() -> str:
    return public_id("act")


class RunPause(models.Model):
    """One stop of a job's run for a person: what agno needs to continue it on any
    worker (its `RunOutput` with the run's messages and pending requirements)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="run_pauses")
    number = models.PositiveSmallIntegerField()  # 1, 2, ... within the job
    run_state = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    # past it, with a decision still missing, the job ends `expired`
    expires_at = models.DateTimeField()
    # every action decided: the job was queued again to continue from here
    resumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="one_pause_number_per_job")]
        ordering = ["job", "number"]

    def __str__(self) -> str:
        return f"{self.job.public_id} pause {self.number}"


class JobAction(models.Model):
    """A tool call waiting for a person: approve (or reject) it, or supply its input."""

    class Type(models.TextChoices):
        APPROVE = "approve"
        INPUT = "input"

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        ANSWERED = "answered"  # an input action whose values were given
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    public_id = models.CharField(max_length=40, unique=True, default=_action_id, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="actions")
    pause = models.ForeignKey(RunPause, on_delete=models.CASCADE, related_name="actions")
    requirement_id = models.CharField(max_length=64)  # agno's RunRequirement id
    tool_call_id = models.CharField(max_length=200, blank=True, default="")
    type = models.CharField(max_length=16, choices=Type.choices)
    tool = models.CharField(max_length=200)
    arguments = models.JSONField(default=dict, blank=True)  # as the model asked for them
    fields = models.JSONField(default=list, blank=True)  # input: [{"name", "type", "description"}]
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    # the tool's run after approval, at most once: marked (committed) before the call, its result after
    run_started_at = models.DateTimeField(null=True, blank=True)
    run_result = models.TextField(null=True, blank=True)
    executions = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "job"])]

    def __str__(self) -> str:
        return f"{self.public_id} {self.type} {self.tool} {self.status}"


class ActionDecision(models.Model):
    """The audit record of a decision: who, when, what, the note, the arguments before and after."""

    class Decision(models.TextChoices):
        APPROVED = "approved"
        REJECTED = "rejected"
        INPUT = "input"

    action = models.OneToOneField(JobAction, on_delete=models.CASCADE, related_name="decision")
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(auto_now_add=True)
    decision = models.CharField(max_length=16, choices=Decision.choices)
    note = models.TextField(blank=True, default="")
    arguments_before = models.JSONField(default=dict, blank=True)
    arguments_after = models.JSONField(default=dict, blank=True)
    values = models.JSONField(null=True, blank=True)
    # a staff member decided on another user's job
    staff_override = models.BooleanField(default=False)

    class Meta:
        ordering = ["decided_at", "id"]

    def __str__(self) -> str:
        return f"{self.action.public_id} {self.decision}"


class IdempotencyRecord(models.Model):
    """The first response to a POST carrying an `Idempotency-Key`, replayed for 24 h."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method_path = models.CharField(max_length=300)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="one_idempotency_key_per_user")]
        indexes = [models.Index(fields=["created_at"])]
