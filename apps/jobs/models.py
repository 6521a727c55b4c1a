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
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.EXPIRED)

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
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.kind} {self.status}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


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
