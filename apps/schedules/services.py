"""Writing schedules, and firing them.

Every firing is an ordinary message job made by `message_send`, the send-message path:
the same webhooks, events, per-session order and per-user caps. A firing is also a
ScheduleRun row, unique on (schedule, due time), in the job's own transaction: whoever
fires a due time first wins, and a second beat, a restarted one or a slow tick that
fires it again hits the constraint and writes nothing."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps import metrics
from apps.agents.models import Agent
from apps.agents.selectors import agent_get_visible
from apps.chat.models import ChatSession
from apps.chat.selectors import session_get_owned
from apps.common import DomainError, NotFound
from apps.jobs.models import Job
from apps.jobs.services import message_send, message_validate
from apps.schedules import timing
from apps.schedules.cron import CronError, cron_parse, tz_parse
from apps.schedules.models import Schedule, ScheduleRun
from apps.webhooks.services import callback_url_validate

logger = logging.getLogger(__name__)

NEW_SESSION = "new"
# pg_advisory_xact_lock(SCHEDULES_LOCK, <user id>): a user's schedule count is checked and
# grown by one request at a time
SCHEDULES_LOCK = 0x5C4E
FIRE_BATCH = 50
MAX_INTERVAL = 366 * 24 * 3600
TIMING_FIELDS = ("cron", "interval_seconds", "timezone", "starts_at", "ends_at")
# the fields a change may set to null (the others may be left out, not nulled)
NULLABLE = ("cron", "interval_seconds", "callback_url", "starts_at", "ends_at")


@dataclass
class _Spec:
    """A schedule's fields as a request gives them, checked by `_validate`."""
    agent_id: str
    message: str
    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str = "UTC"
    session: str = NEW_SESSION
    callback_url: str = ""
    misfire: str = Schedule.Misfire.RUN_LATEST
    enabled: bool = True
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    name: str = ""


def _aware(value: datetime | None, tz_name: str) -> datetime | None:
    """A time without an offset is a wall-clock time in the schedule's timezone."""
    if value is None or timezone.is_aware(value):
        return value
    return value.replace(tzinfo=tz_parse(tz_name))


def _check_clock(spec: _Spec) -> str:
    """The timezone, and exactly one of a cron that parses or an interval of a minimum to a year.
    Returns the cron, stripped ("" for an interval). Raises DomainError."""
    try:
        tz_parse(spec.timezone) if isinstance(spec.timezone, str) else tz_parse("")
    except CronError as exc:
        raise DomainError("invalid_timezone", f"timezone: {exc}") from None
    cron = (spec.cron or "").strip()
    if bool(cron) == (spec.interval_seconds is not None):
        raise DomainError("invalid_schedule", "give exactly one of cron or interval_seconds.")
    if cron:
        try:
            cron_parse(cron)
        except CronError as exc:
            raise DomainError("invalid_cron", f"cron: {exc}") from None
    minimum = settings.AGENTOS_SCHEDULE_MIN_INTERVAL
    if spec.interval_seconds is not None and spec.interval_seconds < minimum:
        raise DomainError("interval_too_short", f"interval_seconds must be at least {minimum}.")
    if spec.interval_seconds is not None and spec.interval_seconds > MAX_INTERVAL:
        raise DomainError("interval_too_long", f"interval_seconds must be at most {MAX_INTERVAL} (a year).")
    return cron


def _check_window(spec: _Spec) -> tuple[datetime | None, datetime | None]:
    """starts_at and ends_at, aware (in the schedule's timezone when they came without an offset)."""
    starts_at, ends_at = _aware(spec.starts_at, spec.timezone), _aware(spec.ends_at, spec.timezone)
    if starts_at and ends_at and ends_at <= starts_at:
        raise DomainError("invalid_window", "ends_at must be after starts_at.")
    return starts_at, ends_at


def _check_gap(schedule: Schedule) -> None:
    """A cron's two closest times (among the next 100) are AGENTOS_SCHEDULE_MIN_INTERVAL apart at least."""
    minimum = settings.AGENTOS_SCHEDULE_MIN_INTERVAL
    gap = timing.closest_gap(schedule, after=timezone.now())
    if gap is not None and gap < timedelta(seconds=minimum):
        raise DomainError("interval_too_short", f"cron fires {int(gap.total_seconds())} s apart; "
                                                f"the least allowed is {minimum} s.")


def schedule_timing_check(**timing_fields: Any) -> Schedule:
    """Only the timing fields (TIMING_FIELDS, as schedule_create takes them), checked as
    schedule_create checks them, with the same DomainErrors. Returns an unsaved Schedule
    holding them, created now, for `timing.upcoming` (the web form's preview); writes nothing."""
    unknown = set(timing_fields) - set(TIMING_FIELDS)
    if unknown:
        raise TypeError(f"not timing fields: {', '.join(sorted(unknown))}")
    spec = _Spec(agent_id="", message="", **{key: value for key, value in timing_fields.items() if value is not None})
    schedule = Schedule(cron=_check_clock(spec), interval_seconds=spec.interval_seconds, timezone=spec.timezone,
                        created_at=timezone.now())
    schedule.starts_at, schedule.ends_at = _check_window(spec)
    if schedule.cron:
        _check_gap(schedule)
    return schedule


def _check_agent(spec: _Spec, *, owner: AbstractBaseUser, schedule: Schedule) -> None:
    """The agent (one the owner may use) and the session (new, or one of the owner's with that
    agent), written onto `schedule`."""
    agent = agent_get_visible(user=owner, agent_id=spec.agent_id)  # 404 agent_not_found
    session: ChatSession | None = None
    if spec.session != NEW_SESSION:
        session = session_get_owned(user=owner, session_id=spec.session)  # 404 session_not_found
        if session.agent_id != agent.pk:
            raise DomainError("session_agent_mismatch", "that session belongs to another agent.", status=409)
    schedule.owner, schedule.agent, schedule.agent_public_id = owner, agent, agent.public_id  # type: ignore[assignment]
    schedule.session, schedule.session_public_id = session, session.public_id if session else ""


def _validate(spec: _Spec, *, owner: AbstractBaseUser, schedule: Schedule, check_agent: bool = True) -> None:
    """Check every field and write them onto `schedule` (unsaved). Raises DomainError.
    The timing checks are schedule_timing_check's, in the same order. `check_agent=False`
    leaves the agent and session as they are, unchecked (a paused schedule's edit)."""
    message_validate(spec.message)
    cron = _check_clock(spec)
    if spec.misfire not in Schedule.Misfire.values:
        raise DomainError("invalid_misfire", f"misfire must be one of {', '.join(Schedule.Misfire.values)}.")
    starts_at, ends_at = _check_window(spec)
    if spec.callback_url:
        callback_url_validate(url=spec.callback_url)
    if check_agent:
        _check_agent(spec, owner=owner, schedule=schedule)
    schedule.name, schedule.message = spec.name.strip()[:200], spec.message
    schedule.cron, schedule.interval_seconds, schedule.timezone = cron, spec.interval_seconds, spec.timezone
    schedule.callback_url, schedule.misfire = spec.callback_url, spec.misfire
    schedule.starts_at, schedule.ends_at = starts_at, ends_at
    if cron:
        _check_gap(schedule)


def _reschedule(schedule: Schedule, *, now: datetime) -> None:
    schedule.next_run_at = timing.next_due(schedule, after=now) if schedule.enabled else None


@transaction.atomic
def schedule_create(*, owner: AbstractBaseUser, **fields: Any) -> Schedule:
    """A new schedule of one of the owner's usable agents (every field checked first;
    409 `schedule_limit_reached` past AGENTOS_USER_MAX_SCHEDULES)."""
    spec = _Spec(**{key: value for key, value in fields.items() if value is not None})
    schedule = Schedule(created_at=timezone.now(), enabled=bool(spec.enabled))
    _validate(spec, owner=owner, schedule=schedule)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [SCHEDULES_LOCK, owner.pk])
    cap = settings.AGENTOS_USER_MAX_SCHEDULES
    if cap > 0 and Schedule.objects.filter(owner_id=owner.pk).count() >= cap:
        raise DomainError("schedule_limit_reached", f"A user may keep at most {cap} schedules.", status=409)
    schedule.paused_reason = "" if schedule.enabled else Schedule.Paused.USER
    _reschedule(schedule, now=schedule.created_at)
    if schedule.enabled and schedule.next_run_at is None:
        raise DomainError("invalid_window", "the schedule has no due time before ends_at.")
    schedule.save()
    return schedule


def _spec_of(schedule: Schedule) -> dict[str, Any]:
    return {"name": schedule.name, "agent_id": schedule.agent_public_id, "message": schedule.message,
            "cron": schedule.cron or None, "interval_seconds": schedule.interval_seconds,
            "timezone": schedule.timezone, "session": schedule.session_public_id or NEW_SESSION,
            "callback_url": schedule.callback_url, "misfire": schedule.misfire, "enabled": schedule.enabled,
            "starts_at": schedule.starts_at, "ends_at": schedule.ends_at}


@transaction.atomic
def schedule_update(*, schedule: Schedule, **changes: Any) -> Schedule:
    """Change some fields; the whole schedule is checked again (its agent and session only
    if it is to be enabled, or they change). A change of its timing (or enabling it) moves
    its next due time to the first one from now."""
    locked = Schedule.objects.select_for_update().get(pk=schedule.pk)
    merged = {**_spec_of(locked), **changes}
    if "cron" in changes and changes["cron"]:
        merged["interval_seconds"] = changes.get("interval_seconds")
    if "interval_seconds" in changes and changes["interval_seconds"] is not None:
        merged["cron"] = changes.get("cron")
    # a schedule that stays paused may be edited (or paused) while its agent is out of reach;
    # one that is, or becomes, enabled needs its agent and session usable
    check_agent = bool(merged["enabled"]) or "agent_id" in changes or "session" in changes
    _validate(_Spec(**merged), owner=locked.owner, schedule=locked, check_agent=check_agent)
    now = timezone.now()
    if "enabled" in changes and bool(changes["enabled"]) != locked.enabled:
        locked.enabled = bool(changes["enabled"])
        locked.paused_reason = "" if locked.enabled else Schedule.Paused.USER
        _reschedule(locked, now=now)
    elif locked.enabled and any(field in changes for field in TIMING_FIELDS):
        _reschedule(locked, now=now)
    locked.save()
    return locked


def schedule_pause(*, schedule: Schedule) -> Schedule:
    return schedule_update(schedule=schedule, enabled=False) if schedule.enabled else schedule


def schedule_resume(*, schedule: Schedule) -> Schedule:
    """Enabled again, from now on: the times it was paused for are not caught up. Its agent
    (and session) must be usable again, else 404 as when it was created."""
    if schedule.enabled:
        return schedule
    return schedule_update(schedule=schedule, enabled=True)


def schedule_delete(*, schedule: Schedule) -> None:
    """The schedule and its run records go; the jobs it made, and their sessions, stay."""
    schedule.delete()


def _unusable(schedule: Schedule) -> str:
    """Why the schedule can no longer fire ("" if it can): its pause reason."""
    agent: Agent | None = schedule.agent
    if agent is None:
        return Schedule.Paused.AGENT_DELETED
    if not agent.enabled:
        return Schedule.Paused.AGENT_DISABLED
    if not schedule.owner.is_active:
        return Schedule.Paused.ACCESS_LOST
    try:
        agent_get_visible(user=schedule.owner, agent_id=agent.public_id)
    except NotFound:
        return Schedule.Paused.ACCESS_LOST
    if schedule.session_public_id and schedule.session_id is None:
        return Schedule.Paused.SESSION_DELETED
    return ""


def _pause(rows: QuerySet[Schedule], reason: str) -> int:
    """The schedules in `rows` pause themselves with `reason`; how many did."""
    return rows.update(enabled=False, paused_reason=reason, next_run_at=None, updated_at=timezone.now())


def _pause_itself(schedule: Schedule, reason: str) -> None:
    logger.warning("schedule %s paused itself: %s", schedule.public_id, Schedule.Paused(reason).label)
    _pause(Schedule.objects.filter(pk=schedule.pk), reason)


def _fire(schedule: Schedule, *, due_at: datetime, trigger: str, misfire: str = "", missed: int = 0,
          skip: bool = False, record_refusal: bool = True) -> ScheduleRun | None:
    """One firing: its run row and, unless skipped, its message job, in one transaction.
    None if this due time was fired already (someone else won the unique constraint).
    A refused job (a cap of the owner's, such as queue_full) is recorded on the run, or
    with `record_refusal=False` raised, and then nothing is written."""
    run = ScheduleRun(schedule=schedule, due_at=due_at, trigger=trigger, misfire=misfire, missed=missed,
                      status=ScheduleRun.Status.SKIPPED if skip else ScheduleRun.Status.JOB)
    try:
        with transaction.atomic():
            run.save()
    except IntegrityError:
        return None
    if skip:
        return run
    try:
        with transaction.atomic():
            run.job = message_send(user=schedule.owner, agent=schedule.agent, message=schedule.message,  # type: ignore[arg-type]
                                   session=schedule.session, callback_url=schedule.callback_url)
    except DomainError as refused:
        if not record_refusal:
            raise
        run.status, run.error_code, run.error_message = ScheduleRun.Status.FAILED, refused.code, refused.message
    run.save(update_fields=["job", "status", "error_code", "error_message"])
    return run


def schedule_fire(*, schedule: Schedule, now: datetime) -> str:
    """Fire a due schedule (locked by the caller) and move it to its next due time.
    Returns what happened: `fired`, `skipped`, `failed`, `paused` or `duplicate`."""
    reason = _unusable(schedule)
    if reason:
        _pause_itself(schedule, reason)
        return "paused"
    first = schedule.next_run_at
    assert first is not None and first <= now
    latest, earlier = timing.due_until(schedule, first=first, now=now)
    late = now - latest > timedelta(seconds=settings.AGENTOS_SCHEDULE_MISFIRE_GRACE)
    if not earlier and not late:  # on time
        misfire, missed, skip = "", 0, False
    elif schedule.misfire == Schedule.Misfire.RUN_LATEST:
        misfire, missed, skip = Schedule.Misfire.RUN_LATEST, earlier, False
    else:  # skip what was missed; a latest time still within the grace runs
        misfire, missed, skip = Schedule.Misfire.SKIP, earlier + (1 if late else 0), late
    run = _fire(schedule, due_at=latest, trigger=ScheduleRun.Trigger.SCHEDULE, misfire=misfire, missed=missed,
                skip=skip)
    schedule.next_run_at = timing.next_due(schedule, after=max(now, latest))
    fields = ["next_run_at", "updated_at"]
    if run is not None and run.status != ScheduleRun.Status.SKIPPED:
        schedule.last_run_at = now
        fields.append("last_run_at")
    schedule.save(update_fields=fields)
    if run is None:
        return "duplicate"
    return "fired" if run.status == ScheduleRun.Status.JOB else str(run.status)


def _pause_unusable_agents() -> int:
    """Schedules of deleted or disabled agents pause at once, not at their next due time."""
    return (_pause(Schedule.objects.filter(enabled=True, agent__isnull=True), Schedule.Paused.AGENT_DELETED)
            + _pause(Schedule.objects.filter(enabled=True, agent__enabled=False), Schedule.Paused.AGENT_DISABLED))


def schedules_fire_due(*, now: datetime | None = None) -> dict[str, int]:
    """Beat's tick: fire every enabled schedule that is due. Schedules are locked with
    SKIP LOCKED, so ticks running together share the work; each batch is one transaction,
    and a schedule's firing is a savepoint in it."""
    counts = {"paused": _pause_unusable_agents()}
    metrics.schedule_fired(outcome="paused", count=counts["paused"])
    for _ in range(1000):  # a bound, not a expected count: every firing moves its schedule past now
        with transaction.atomic():
            moment = now or timezone.now()
            batch = list(Schedule.objects.select_for_update(skip_locked=True, of=("self",))
                         .select_related("owner", "agent", "session")
                         .filter(enabled=True, next_run_at__lte=moment).order_by("next_run_at")[:FIRE_BATCH])
            for schedule in batch:
                outcome = schedule_fire(schedule=schedule, now=moment)
                counts[outcome] = counts.get(outcome, 0) + 1
                metrics.schedule_fired(outcome=outcome)
        if len(batch) < FIRE_BATCH:
            break
    return {key: value for key, value in counts.items() if value}


@transaction.atomic
def schedule_run_now(*, schedule: Schedule) -> Job:
    """Fire the schedule once now, whatever its timing and even while paused (its agent must
    be usable: 409 `schedule_unusable` with the reason); its next due time does not move."""
    locked = (Schedule.objects.select_for_update(of=("self",)).select_related("owner", "agent", "session")
              .get(pk=schedule.pk))
    reason = _unusable(locked)
    if reason:
        raise DomainError("schedule_unusable", f"The schedule cannot run: {Schedule.Paused(reason).label}.",
                          status=409)
    now = timezone.now()
    run = _fire(locked, due_at=now, trigger=ScheduleRun.Trigger.MANUAL, record_refusal=False)
    assert run is not None and run.job is not None  # a manual run is not under the once-per-due-time constraint
    Schedule.objects.filter(pk=locked.pk).update(last_run_at=now)
    return run.job
