"""/schedules/: a user's schedules of their agents (owner-only: anyone else's is a 404)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from apps.api.idempotency import idempotent
from apps.api.ratelimit import check_job_rate
from apps.api.schemas import ErrorOut, JobAccepted, ObjectIn, omittable
from apps.common import DomainError, agentos_enabled_check, page_newest_first
from apps.jobs.presenters import job_accepted_to_dict
from apps.schedules import services
from apps.schedules.presenters import run_to_dict, schedule_to_dict
from apps.schedules.selectors import schedule_get_owned, schedule_list, schedule_runs

router = Router(tags=["schedules"])
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 429, 503)}
CRON_DOC = ("Five cron fields (minute hour day-of-month month day-of-week; names, ranges, steps) or "
            "@hourly/@daily/@weekly/@monthly/@yearly, in `timezone`'s wall-clock time.")
SESSION_DOC = '"new": every run opens a new session; a session id: every run goes to that one, in order.'
MISFIRE_DOC = ('After downtime: "run_latest" runs once, for the most recent missed time; "skip" runs '
               "nothing until the next due time. Recorded on the run either way.")


class ScheduleIn(ObjectIn):
    agent_id: str = Field(..., min_length=1, max_length=40)
    message: str = Field(..., min_length=1)
    cron: Optional[str] = Field(None, max_length=200, description=CRON_DOC)
    interval_seconds: Optional[int] = Field(None, description="Or: every this many seconds.")
    timezone: str = Field("UTC", max_length=64, description="An IANA timezone, such as Europe/Paris.")
    session: str = Field("new", min_length=1, max_length=40, description=SESSION_DOC)
    callback_url: Optional[str] = Field(None, max_length=2000, description="Each run's job webhook.")
    enabled: bool = True
    starts_at: Optional[datetime] = Field(None, description="No run before; without an offset, in `timezone`.")
    ends_at: Optional[datetime] = Field(None, description="No run after.")
    misfire: str = Field("run_latest", max_length=16, description=MISFIRE_DOC)
    name: str = Field("", max_length=200)


class SchedulePatch(ObjectIn):
    """Every field may be omitted; `cron`, `interval_seconds`, `callback_url`, `starts_at` and
    `ends_at` may be null (giving one of cron and interval_seconds drops the other)."""
    agent_id: str = omittable(min_length=1, max_length=40)
    message: str = omittable(min_length=1)
    cron: Optional[str] = Field(None, max_length=200)
    interval_seconds: Optional[int] = None
    timezone: str = omittable(max_length=64)
    session: str = omittable(min_length=1, max_length=40)
    callback_url: Optional[str] = Field(None, max_length=2000)
    enabled: bool = omittable()
    starts_at: Optional[datetime] = None
    ends_at: Optional[datetime] = None
    misfire: str = omittable(max_length=16)
    name: str = omittable(max_length=200)


class ScheduleOut(Schema):
    id: str
    name: str
    agent_id: str
    message: str
    cron: Optional[str]
    interval_seconds: Optional[int]
    timezone: str
    session: str
    callback_url: Optional[str]
    misfire: str
    enabled: bool
    state: str = Field(..., description="active, paused or ended (past ends_at).")
    paused_reason: Optional[str] = Field(..., description=(
        "user, or why it paused itself: agent_deleted, agent_disabled, access_lost, session_deleted."))
    starts_at: Optional[str]
    ends_at: Optional[str]
    next_run_at: Optional[str]
    last_run_at: Optional[str]
    created_at: str
    updated_at: str


class ScheduleList(Schema):
    schedules: list[ScheduleOut]
    next: Optional[str]


class RunOut(Schema):
    id: str
    due_at: Optional[str]
    fired_at: str
    trigger: str = Field(..., description="schedule, or manual (run now).")
    misfire: Optional[str]
    missed: int = Field(..., description="Due times this firing passed over without a job.")
    status: str = Field(..., description="Its job's status, or skipped / failed when it made no job.")
    job_id: Optional[str]
    session_id: Optional[str]
    error: Optional[dict[str, str]]


class RunList(Schema):
    runs: list[RunOut]
    next: Optional[str]


def _owned(request: HttpRequest, schedule_id: str) -> Any:
    agentos_enabled_check()
    return schedule_get_owned(user=request.auth, schedule_id=schedule_id)  # type: ignore[attr-defined]


@router.post("schedules/", response={201: ScheduleOut, **ERRORS}, summary="Create a schedule")
def schedules_create(request: HttpRequest, payload: ScheduleIn) -> Any:
    """Run an agent on a cron or an interval. Every run is an ordinary message job (its
    webhook, events, session order and caps as send-message's). Honours `Idempotency-Key`."""
    agentos_enabled_check()
    return idempotent(request, lambda: (201, schedule_to_dict(services.schedule_create(
        owner=request.auth, **payload.dict()))))  # type: ignore[attr-defined]


@router.get("schedules/", response={200: ScheduleList, **ERRORS}, summary="Your schedules")
def schedules_list(request: HttpRequest, agent_id: Optional[str] = None, cursor: Optional[str] = None,
                   limit: int = Query(20, ge=1, le=100)) -> Any:
    agentos_enabled_check()
    page, after = page_newest_first(schedule_list(user=request.auth, agent_id=agent_id),  # type: ignore[attr-defined]
                                    cursor, limit)
    return {"schedules": [schedule_to_dict(s) for s in page], "next": after}


@router.get("schedules/{schedule_id}/", response={200: ScheduleOut, **ERRORS})
def schedules_get(request: HttpRequest, schedule_id: str) -> Any:
    return schedule_to_dict(_owned(request, schedule_id))


@router.patch("schedules/{schedule_id}/", response={200: ScheduleOut, **ERRORS})
def schedules_update(request: HttpRequest, schedule_id: str, payload: SchedulePatch) -> Any:
    schedule = _owned(request, schedule_id)
    changes = payload.dict(exclude_unset=True)
    if any(value is None for key, value in changes.items() if key not in services.NULLABLE):
        raise DomainError("invalid_input", "fields may be omitted but not null.")
    if "callback_url" in changes:
        changes["callback_url"] = changes["callback_url"] or ""
    return schedule_to_dict(services.schedule_update(schedule=schedule, **changes))


@router.delete("schedules/{schedule_id}/", response={204: None, **ERRORS})
def schedules_delete(request: HttpRequest, schedule_id: str) -> Any:
    services.schedule_delete(schedule=_owned(request, schedule_id))
    return 204, None


@router.post("schedules/{schedule_id}/pause/", response={200: ScheduleOut, **ERRORS})
def schedules_pause(request: HttpRequest, schedule_id: str) -> Any:
    return schedule_to_dict(services.schedule_pause(schedule=_owned(request, schedule_id)))


@router.post("schedules/{schedule_id}/resume/", response={200: ScheduleOut, **ERRORS})
def schedules_resume(request: HttpRequest, schedule_id: str) -> Any:
    """Enabled again from now on (the times it was paused for are not caught up)."""
    return schedule_to_dict(services.schedule_resume(schedule=_owned(request, schedule_id)))


@router.post("schedules/{schedule_id}/run/", response={202: JobAccepted, **ERRORS}, summary="Run a schedule now")
def schedules_run(request: HttpRequest, schedule_id: str) -> Any:
    """Fire it once now (202, as send-message answers); its next due time does not move.
    Honours `Idempotency-Key`."""
    schedule = _owned(request, schedule_id)
    check_job_rate(request)
    return idempotent(request, lambda: (202, job_accepted_to_dict(services.schedule_run_now(schedule=schedule))))


@router.get("schedules/{schedule_id}/runs/", response={200: RunList, **ERRORS}, summary="A schedule's runs")
def schedules_runs(request: HttpRequest, schedule_id: str, cursor: Optional[str] = None,
                   limit: int = Query(20, ge=1, le=100)) -> Any:
    """Each firing, newest first: its due time, its job and the job's status."""
    schedule = _owned(request, schedule_id)
    page, after = page_newest_first(schedule_runs(schedule=schedule), cursor, limit)
    return {"runs": [run_to_dict(run, tz=schedule.timezone) for run in page], "next": after}
