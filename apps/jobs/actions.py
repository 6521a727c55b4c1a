"""Paused runs: a person's decisions on a run that stopped before a tool call.

A run whose tool needs approval or input pauses (the worker stores it with
`apps.jobs.lifecycle.job_pause`): the job is `requires_action`, holds no
worker and no lease, and keeps its session's place (the next message waits
behind it, as behind any unfinished one). Here:

- `job_actions_decide`: the owner (or staff, recorded as an override) decides
  one or more of the pending actions. Each decision is an `ActionDecision`
  row; under the job's row lock an action is decided once (a second decision
  is 409 `action_already_decided`). Once every action of the pause is decided,
  the job is queued again and any worker continues the run from the stored
  state.
- `action_run_start` / `action_run_finish`: an approved tool runs at most once.
  Its start is committed before the call and its result after it, so a run
  continued again after its worker died replays the result, or, when the worker
  died during the call, says so instead of calling it again.
- `paused_jobs_due`: pauses past their `expires_at`, which the sweeper ends
  `expired` (with their webhook).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from apps.common import DomainError, NotFound
from apps.events.services import job_status_changed
from apps.jobs.dispatch import admitted_on_send, job_dispatch_on_commit
from apps.jobs.models import ActionDecision, Job, JobAction, RunPause

NOTE_MAX = 2000
DECIDED = (JobAction.Status.APPROVED, JobAction.Status.REJECTED, JobAction.Status.ANSWERED)
CLOSED = (JobAction.Status.EXPIRED, JobAction.Status.CANCELLED)


def action_expires_at(*, job: Job, now: datetime) -> datetime:
    """AGENTOS_ACTION_TIMEOUT from now, and never past the job's deadline."""
    expires = now + timedelta(seconds=settings.AGENTOS_ACTION_TIMEOUT)
    return min(expires, job.deadline_at) if job.deadline_at else expires


def pause_record(*, job: Job, number: int, run_state: dict[str, Any], actions: list[dict[str, Any]],
                 now: datetime) -> RunPause:
    """Inside the transaction that paused `job`: the stored run and its pending actions."""
    pause = RunPause.objects.create(job=job, number=number, run_state=run_state,
                                    expires_at=action_expires_at(job=job, now=now))
    JobAction.objects.bulk_create([JobAction(
        job=job, pause=pause, requirement_id=a["requirement_id"], tool_call_id=a.get("tool_call_id") or "",
        type=a["type"], tool=a["tool"], arguments=a.get("arguments") or {}, fields=a.get("fields") or [])
        for a in actions])
    return pause


def job_actions_close(*, job: Job) -> None:
    """Inside the transaction that ended `job`: its undecided actions are closed with it."""
    if not job.pauses:
        return
    closed = JobAction.Status.CANCELLED if job.status == Job.Status.CANCELLED else JobAction.Status.EXPIRED
    JobAction.objects.filter(job_id=job.pk, status=JobAction.Status.PENDING).update(status=closed)


# --- deciding ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    action_id: str
    approved: bool | None = None
    note: str = ""
    arguments: dict[str, Any] | None = None
    values: dict[str, Any] | None = None


def _decision(raw: object, index: int) -> Decision:
    where = f"decisions[{index}]"
    if not isinstance(raw, dict):
        raise DomainError("invalid_input", f"{where} must be an object.")
    unknown = set(raw) - {"action_id", "approved", "note", "arguments", "values"}
    if unknown:
        raise DomainError("invalid_input", f"{where} has unknown field(s): {', '.join(sorted(unknown))}.")
    action_id, approved, note = raw.get("action_id"), raw.get("approved"), raw.get("note", "")
    arguments, values = raw.get("arguments"), raw.get("values")
    if not isinstance(action_id, str) or not action_id:
        raise DomainError("invalid_input", f"{where}.action_id must be an action id.")
    if ("approved" in raw) == ("values" in raw):
        raise DomainError("invalid_input", f"{where} needs either approved (true or false) or values, not both.")
    if "approved" in raw and not isinstance(approved, bool):
        raise DomainError("invalid_input", f"{where}.approved must be true or false.")
    if "values" in raw and not isinstance(values, dict):
        raise DomainError("invalid_input", f"{where}.values must be an object of field values.")
    if not isinstance(note, str) or len(note) > NOTE_MAX or "\x00" in note:
        raise DomainError("invalid_input", f"{where}.note must be text of at most {NOTE_MAX} characters.")
    if arguments is not None and (not isinstance(arguments, dict) or approved is not True):
        raise DomainError("invalid_input", f"{where}.arguments must be an object, sent only with approved: true.")
    return Decision(action_id=action_id, approved=approved, note=note, arguments=arguments, values=values)


def decisions_parse(raw: object) -> list[Decision]:
    if not isinstance(raw, list) or not raw:
        raise DomainError("invalid_input", "decisions must be a non-empty list.")
    if len(raw) > 100:
        raise DomainError("invalid_input", "at most 100 decisions at a time.")
    decisions = [_decision(item, index) for index, item in enumerate(raw)]
    ids = [d.action_id for d in decisions]
    if len(set(ids)) != len(ids):
        raise DomainError("invalid_input", "each action may be decided once per request.")
    return decisions


def job_get_for_decision(*, user: AbstractBaseUser, job_id: str) -> tuple[Job, bool]:
    """The job whose actions `user` may decide, and whether it is a staff override
    (staff deciding on another user's job). Anyone else's job is a 404."""
    job = Job.objects.filter(public_id=job_id).first() if isinstance(job_id, str) else None
    if job is None or (job.owner_id != user.pk and not getattr(user, "is_staff", False)):
        raise NotFound("job")
    return job, job.owner_id != user.pk


def _check(action: JobAction, decision: Decision, job: Job) -> None:
    if action.status in DECIDED:
        raise DomainError("action_already_decided", f"Action {action.public_id} was already decided "
                          f"({action.status}).", status=409)
    if action.status in CLOSED or job.is_terminal:
        raise DomainError("job_finished", f"The job already ended {job.status}.", status=409)
    if action.type == JobAction.Type.APPROVE and decision.approved is None:
        raise DomainError("invalid_input", f"Action {action.public_id} asks for approval: send approved.")
    if action.type == JobAction.Type.INPUT:
        if decision.values is None:
            raise DomainError("invalid_input", f"Action {action.public_id} asks for input: send values.")
        names = {field["name"] for field in action.fields}
        missing, extra = names - decision.values.keys(), decision.values.keys() - names
        if missing or extra:
            raise DomainError("invalid_input", f"Action {action.public_id} takes values for exactly: "
                              f"{', '.join(sorted(names))}.")


def _record(action: JobAction, decision: Decision, *, user: AbstractBaseUser, override: bool) -> None:
    if decision.values is not None:
        kind, status = ActionDecision.Decision.INPUT, JobAction.Status.ANSWERED
        after = {**action.arguments, **decision.values}
    elif decision.approved:
        kind, status = ActionDecision.Decision.APPROVED, JobAction.Status.APPROVED
        after = decision.arguments if decision.arguments is not None else action.arguments
    else:
        kind, status, after = ActionDecision.Decision.REJECTED, JobAction.Status.REJECTED, action.arguments
    ActionDecision.objects.create(action=action, decided_by=user, decision=kind,  # type: ignore[misc]
                                  note=decision.note,
                                  arguments_before=action.arguments, arguments_after=after,
                                  values=decision.values, staff_override=override)
    JobAction.objects.filter(pk=action.pk).update(status=status)


@transaction.atomic
def job_actions_decide(*, user: AbstractBaseUser, job_id: str, decisions: object) -> Job:
    """Decide actions of the job's current pause (all or some); once none is left
    pending, the job is queued again. Returns the job as it is now."""
    parsed = decisions_parse(decisions)
    job, override = job_get_for_decision(user=user, job_id=job_id)
    job = Job.objects.select_for_update().get(pk=job.pk)  # decisions on one job one at a time
    if job.status == Job.Status.REQUIRES_ACTION and job.lease_expires_at and job.lease_expires_at > timezone.now():
        # agno's AgentOS is continuing this run with the decisions of its own request
        raise DomainError("run_continuing", "This run is being continued in AgentOS; try again when it has "
                          "paused again or ended.", status=409)
    actions = {a.public_id: a for a in JobAction.objects.filter(job=job, public_id__in=[d.action_id for d in parsed])}
    for decision in parsed:
        if decision.action_id not in actions:
            raise NotFound("action")
        _check(actions[decision.action_id], decision, job)
    for decision in parsed:
        _record(actions[decision.action_id], decision, user=user, override=override)
    pause = RunPause.objects.filter(job=job, resumed_at__isnull=True).order_by("-number").first()
    if (job.status == Job.Status.REQUIRES_ACTION and pause is not None
            and not pause.actions.filter(status=JobAction.Status.PENDING).exists()):
        _resume(job, pause)
    return Job.objects.select_related("agent", "session").get(pk=job.pk)


def _resume(job: Job, pause: RunPause) -> None:
    """Every action decided: queue the job again, to continue from `pause`. Its
    attempts count afresh: they count lost workers, and this is a new leg of the run."""
    now = timezone.now()
    enqueued = None if admitted_on_send(job.kind) else now  # through the user's admission window, as when sent
    RunPause.objects.filter(pk=pause.pk).update(resumed_at=now)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.QUEUED, attempts=0, enqueued_at=enqueued)
    job.status, job.attempts, job.enqueued_at = Job.Status.QUEUED, 0, enqueued
    job_status_changed(job=job)  # `job.queued` again
    job_dispatch_on_commit(job=job)


# --- the continued run ---------------------------------------------------------------------------------

def resumable_pause(*, job: Job) -> RunPause | None:
    """The pause a claimed job continues from: its latest, once every action was decided."""
    if not job.pauses:
        return None
    pause = RunPause.objects.filter(job=job).order_by("-number").first()
    return pause if pause is not None and pause.resumed_at is not None else None


def pause_decisions(*, pause: RunPause) -> list[tuple[JobAction, ActionDecision]]:
    return [(action, action.decision) for action in pause.actions.select_related("decision").order_by("id")
            if hasattr(action, "decision")]


def action_run_start(*, action_id: str) -> tuple[str, str | None]:
    """Before an approved tool runs: ("run", None) the first time, committed before the
    call; later ("done", its result) or ("interrupted", None) when a worker died during it."""
    if JobAction.objects.filter(public_id=action_id, run_started_at__isnull=True).update(
            run_started_at=timezone.now(), executions=1):
        return "run", None
    result = JobAction.objects.filter(public_id=action_id).values_list("run_result", flat=True).first()
    return ("done", result) if result is not None else ("interrupted", None)


def action_run_finish(*, action_id: str, result: str) -> None:
    JobAction.objects.filter(public_id=action_id).update(run_result=result)


def paused_jobs_due(*, now: datetime, limit: int = 1000) -> list[int]:
    """Ids of paused jobs whose pending actions outlived their `expires_at`."""
    return list(RunPause.objects.filter(resumed_at__isnull=True, expires_at__lt=now,
                                        job__status=Job.Status.REQUIRES_ACTION)
                .values_list("job_id", flat=True)[:limit])


# --- a pause continued by agno's AgentOS server ------------------------------------------------------

def pause_settle(*, job: Job, user: AbstractBaseUser, calls: dict[str, dict[str, Any]], now: datetime) -> None:
    """Inside the transaction that records how a pause of `job` was continued outside
    the queue (agno's AgentOS continue endpoint, which takes the decisions in its own
    request): each pending action of the open pause gets the decision its tool call
    carried, keyed by tool call id (`{"approved": bool, "note", "arguments"}` or
    `{"values": {...}}`), as an audited `ActionDecision` by `user`; the pause is marked
    resumed. An action whose call carried none stays pending (the job's ending closes it)."""
    pause = RunPause.objects.filter(job=job, resumed_at__isnull=True).order_by("-number").first()
    if pause is None:
        return
    for action in pause.actions.filter(status=JobAction.Status.PENDING):
        call = calls.get(action.tool_call_id)
        if call is None:
            continue
        decision = Decision(action_id=action.public_id, approved=call.get("approved"), note=call.get("note") or "",
                            arguments=call.get("arguments"), values=call.get("values"))
        _record(action, decision, user=user, override=job.owner_id != user.pk)
    RunPause.objects.filter(pk=pause.pk).update(resumed_at=now)
