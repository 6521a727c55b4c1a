"""Schedules and their runs as the API shows them. A schedule's own times are given
in its timezone (ISO 8601 with that offset), the way its owner thinks of them."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from apps.schedules.cron import CronError, tz_parse
from apps.schedules.models import Schedule, ScheduleRun
from apps.schedules.services import NEW_SESSION

# the units an interval is written in, smallest first
UNITS = {"s": 1, "min": 60, "h": 3600}


def interval_parts(seconds: int) -> tuple[int, str]:
    """An interval in the largest unit that divides it: 900 is (15, "min")."""
    unit = next(name for name, size in reversed(UNITS.items()) if seconds % size == 0)
    return seconds // UNITS[unit], unit


def in_zone(value: datetime, tz_name: str) -> datetime:
    """`value` in the schedule's timezone; in UTC if that zone left the system's tz database."""
    try:
        return value.astimezone(tz_parse(tz_name))
    except CronError:
        return value.astimezone(UTC)


def _local(value: datetime | None, tz_name: str) -> str | None:
    return in_zone(value, tz_name).isoformat() if value is not None else None


def schedule_state(schedule: Schedule) -> str:
    """`active`, `paused` (by its owner or by itself: `paused_reason`) or `ended` (past ends_at)."""
    if not schedule.enabled:
        return "paused"
    return "active" if schedule.next_run_at is not None else "ended"


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    tz = schedule.timezone
    return {
        "id": schedule.public_id, "name": schedule.name, "agent_id": schedule.agent_public_id,
        "message": schedule.message, "cron": schedule.cron or None, "interval_seconds": schedule.interval_seconds,
        "timezone": tz, "session": schedule.session_public_id or NEW_SESSION,
        "callback_url": schedule.callback_url or None, "misfire": schedule.misfire, "enabled": schedule.enabled,
        "state": schedule_state(schedule), "paused_reason": schedule.paused_reason or None,
        "starts_at": _local(schedule.starts_at, tz), "ends_at": _local(schedule.ends_at, tz),
        "next_run_at": _local(schedule.next_run_at, tz), "last_run_at": _local(schedule.last_run_at, tz),
        "created_at": schedule.created_at.isoformat(), "updated_at": schedule.updated_at.isoformat(),
    }


def run_to_dict(run: ScheduleRun, *, tz: str = "UTC") -> dict[str, Any]:
    """One firing. `status`: its job's status, `skipped` / `failed` when it made no job, or
    `deleted` when its job was deleted (with its agent)."""
    job = run.job
    error = None
    if job is None and run.error_code:
        error = {"code": run.error_code, "message": run.error_message}
    elif job is not None and job.error_code:
        error = {"code": job.error_code, "message": job.error_message}
    return {
        "id": run.public_id, "due_at": _local(run.due_at, tz), "fired_at": _local(run.created_at, tz),
        "trigger": run.trigger, "misfire": run.misfire or None, "missed": run.missed,
        # a run whose job went with its deleted agent keeps its place in the history
        "status": job.status if job is not None else "deleted" if run.status == run.Status.JOB else run.status,
        "job_id": job.public_id if job is not None else None,
        "session_id": job.session.public_id if job is not None and job.session is not None else None,
        "error": error,
    }
