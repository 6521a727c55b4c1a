"""Users' schedules of their agents, and each firing's record.

A schedule is a row of Opie's own, not a django-celery-beat PeriodicTask: one beat
entry (`opie-fire-schedules`) wakes a worker every few seconds, and PostgreSQL decides
what is due (apps.schedules.services.schedules_fire_due). So two beat processes, a
restarted beat or a slow tick never fire a due time twice: a firing is a ScheduleRun
row, unique on (schedule, due time), written in the same transaction as its job."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.common import public_id


def _schedule_id() -> str:
    return public_id("sched")


def _run_id() -> str:
    return public_id("srun")


class Schedule(models.Model):
    class Misfire(models.TextChoices):
        RUN_LATEST = "run_latest"  # after downtime, run once, for the most recent missed time
        SKIP = "skip"  # after downtime, run nothing until the next due time

    class Paused(models.TextChoices):
        """Why a schedule is not enabled: its owner paused it, or it paused itself."""
        NONE = "", "not paused"
        USER = "user", "paused by its owner"
        AGENT_DELETED = "agent_deleted", "its agent was deleted"
        AGENT_DISABLED = "agent_disabled", "its agent was disabled"
        ACCESS_LOST = "access_lost", "its owner may no longer use the agent"
        SESSION_DELETED = "session_deleted", "its session was deleted"

    public_id = models.CharField(max_length=40, unique=True, default=_schedule_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="schedules")
    # a deleted agent leaves its schedule (paused, with its history), not a cascade
    agent = models.ForeignKey("agents.Agent", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="schedules")
    agent_public_id = models.CharField(max_length=40)
    name = models.CharField(max_length=200, blank=True, default="")
    message = models.TextField()
    cron = models.CharField(max_length=200, blank=True, default="")  # or interval_seconds
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    # "" : every firing opens a new session; else every firing goes to this one, in order
    session_public_id = models.CharField(max_length=40, blank=True, default="")
    session = models.ForeignKey("chat.ChatSession", on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="+")
    callback_url = models.URLField(max_length=2000, blank=True, default="")
    misfire = models.CharField(max_length=16, choices=Misfire.choices, default=Misfire.RUN_LATEST)
    enabled = models.BooleanField(default=True)
    paused_reason = models.CharField(max_length=32, choices=Paused.choices, blank=True, default="")
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    # the next due time; None once it is past `ends_at`. The tick reads only enabled rows due now.
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["next_run_at"], condition=Q(enabled=True), name="schedule_due"),
            models.Index(fields=["owner", "-created_at", "-id"], name="schedule_owner_newest"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(Q(cron="") & Q(interval_seconds__isnull=False))
                | (~Q(cron="") & Q(interval_seconds__isnull=True)),
                name="schedule_cron_or_interval"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.cron or f'every {self.interval_seconds} s'})"


class ScheduleRun(models.Model):
    """One firing of a schedule: its job, or why there is none."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        MANUAL = "manual"  # POST schedules/<id>/run/

    class Status(models.TextChoices):
        """A run with a job shows its job's status; these are the runs without one."""
        JOB = "job", "its job's status"
        SKIPPED = "skipped"  # a missed due time, under misfire "skip"
        FAILED = "failed"  # refused when it fired (queue_full, ...): error_code says why

    public_id = models.CharField(max_length=40, unique=True, default=_run_id, editable=False)
    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    due_at = models.DateTimeField()  # the due time it fired for; a manual run's request time
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.SCHEDULE)
    # set when it fired after missed due times: the policy applied, and how many it passed over
    misfire = models.CharField(max_length=16, choices=Schedule.Misfire.choices, blank=True, default="")
    missed = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.JOB)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    job = models.OneToOneField("jobs.Job", on_delete=models.SET_NULL, null=True, blank=True,
                               related_name="schedule_run")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["schedule", "-created_at", "-id"], name="schedule_run_newest")]
        constraints = [
            # no double firing: one run per schedule and due time, whoever fires it
            models.UniqueConstraint(fields=["schedule", "due_at"], condition=Q(trigger="schedule"),
                                    name="schedule_run_once_per_due_time"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} @ {self.due_at:%Y-%m-%d %H:%M:%S}"
