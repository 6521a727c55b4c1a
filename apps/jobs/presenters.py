"""The one JSON shape of a job: the API, the service facade and webhooks all use it."""
from __future__ import annotations

import functools
from typing import Any

from django.urls import reverse

from apps.jobs.models import ActionDecision, Job, JobAction, RunPause
from apps.jobs.retryable import job_retryable
from apps.tracing import trace_id


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def job_to_dict(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.public_id,
        "kind": job.kind,
        "status": job.status,
        "agent_id": job.agent.public_id if job.agent_id else None,
        "session_id": job.session.public_id if job.session_id else None,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "result": job.result,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "attempts": job.attempts,
        "priority": Job.Priority(job.priority).label,
        "retryable": job_retryable(job),
        # one lookup, and only for a job that is a retry: every other job has no retry_of_id
        "retry_of": job.retry_of.public_id if job.retry_of_id else None,
        "trace_id": trace_id(job.trace_context),  # its trace (apps.tracing); null while tracing is off
        **job_actions_to_dict(job),
    }


def job_actions_to_dict(job: Job) -> dict[str, Any]:
    """`required_action` (what a paused job waits for) and `decisions` (the audit of every
    decision on the job); a job that never paused costs no query."""
    if not job.pauses:
        return {"required_action": None, "decisions": []}
    required = None
    if job.status == Job.Status.REQUIRES_ACTION:
        pause = RunPause.objects.filter(job_id=job.pk).order_by("-number").first()
        if pause is not None:
            pending = JobAction.objects.filter(pause=pause, status=JobAction.Status.PENDING)
            required = {"actions": [action_to_dict(a) for a in pending], "expires_at": _iso(pause.expires_at)}
    decisions = ActionDecision.objects.filter(action__job_id=job.pk).select_related("action", "decided_by")
    return {"required_action": required, "decisions": [decision_to_dict(d) for d in decisions]}


def action_to_dict(action: JobAction) -> dict[str, Any]:
    shown: dict[str, Any] = {"id": action.public_id, "type": action.type, "tool": action.tool,
                             "arguments": action.arguments}
    if action.type == JobAction.Type.INPUT:
        shown["fields"] = action.fields
    return shown


def decision_to_dict(decision: ActionDecision) -> dict[str, Any]:
    return {"action_id": decision.action.public_id, "tool": decision.action.tool, "decision": decision.decision,
            "decided_by": decision.decided_by.get_username() if decision.decided_by else None,
            "decided_at": _iso(decision.decided_at), "note": decision.note,
            "arguments_before": decision.arguments_before, "arguments_after": decision.arguments_after,
            "values": decision.values, "staff_override": decision.staff_override}


def job_accepted_to_dict(job: Job) -> dict[str, Any]:
    """The answer to an accepted message (202): the job, its session, and where to poll it."""
    return {"job_id": job.public_id, "status": job.status, "session_id": job.session.public_id,
            "poll_url": _job_url().format(job_id=job.public_id)}


_MARKER = "JOB-ID"


@functools.cache
def _job_url() -> str:
    """`GET jobs/<job_id>/`'s path with a `{job_id}` slot: resolved once, not for every message."""
    return reverse("agentos:jobs_get", kwargs={"job_id": _MARKER}).replace(_MARKER, "{job_id}")
