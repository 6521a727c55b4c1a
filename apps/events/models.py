from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class JobEvent(models.Model):
    """One thing that happened to a job, numbered 1, 2, 3… per job.

    The rows are the record (PostgreSQL is the truth); Redis pub/sub only tells
    listeners that a new `seq` exists. `seq` is the SSE event id a client resumes from.
    """

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="one_event_per_job_seq")]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.seq} {self.type}"
