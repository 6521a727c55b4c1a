"""The one JSON shape of a job: the API, the service facade and webhooks all use it."""
from __future__ import annotations

import functools
from typing import Any

from django.urls import reverse

from apps.jobs.models import Job


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
    }


def job_accepted_to_dict(job: Job) -> dict[str, Any]:
    """The answer to an accepted message (202): the job, its session, and where to poll it."""
    return {"job_id": job.public_id, "status": job.status, "session_id": job.session.public_id,
            "poll_url": _job_url().format(job_id=job.public_id)}


_MARKER = "JOB-ID"


@functools.cache
def _job_url() -> str:
    """`GET jobs/<job_id>/`'s path with a `{job_id}` slot: resolved once, not for every message."""
    return reverse("agentos:jobs_get", kwargs={"job_id": _MARKER}).replace(_MARKER, "{job_id}")
