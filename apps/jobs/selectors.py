from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from apps.common import DomainError, NotFound
from apps.jobs.models import Job


def job_get_owned(*, user: AbstractBaseUser, job_id: str) -> Job:
    job = Job.objects.select_related("agent", "session").filter(owner=user, public_id=job_id).first()
    if job is None:
        raise NotFound("job")
    return job


def job_list(*, user: AbstractBaseUser, status: str | None = None, kind: str | None = None,
             agent_id: str | None = None, session_id: str | None = None) -> QuerySet[Job]:
    jobs = Job.objects.select_related("agent", "session").filter(owner=user)
    if status:
        if status not in Job.Status.values:
            raise DomainError("invalid_input", f"status must be one of {', '.join(Job.Status.values)}.")
        jobs = jobs.filter(status=status)
    if kind:
        if kind not in Job.Kind.values:
            raise DomainError("invalid_input", f"kind must be one of {', '.join(Job.Kind.values)}.")
        jobs = jobs.filter(kind=kind)
    if agent_id:
        jobs = jobs.filter(agent__public_id=agent_id)
    if session_id:
        jobs = jobs.filter(session__public_id=session_id)
    return jobs
