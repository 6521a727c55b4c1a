"""Run an agent-sync job: claim it, sync under the global lock, record progress, finish."""
from __future__ import annotations

import logging

from apps.agents.sync import SyncBusy, SyncResult, agents_for_sync, agents_sync, sync_lock, sync_summary
from apps.common import DomainError
from apps.events.services import job_event_append
from apps.jobs.lifecycle import job_claim, job_fail, job_succeed
from apps.jobs.models import Job
from config.logging import log_context
from workers.execution import worker_name

logger = logging.getLogger(__name__)


def execute_sync_job(job_id: int) -> str:
    job = job_claim(job_id=job_id, worker=worker_name())
    if job is None:
        logger.info("sync job %s skipped: not claimable now", job_id)
        return "skipped"
    with log_context(job_id=job.public_id):
        outcome = _run_claimed(job)
        logger.info("sync job %s", outcome)
        return outcome


def _run_claimed(job: Job) -> str:
    params = job.input or {}

    def progress(done: int, total: int, result: SyncResult) -> None:
        job_event_append(job=job, type="sync.progress",
                         data={"done": done, "total": total, "agent_id": result.agent_id, "status": result.status})

    try:
        with sync_lock():
            agents = agents_for_sync(user_id=params.get("user_id"), agent_id=params.get("agent_id"))
            results = agents_sync(agents=agents, dry_run=bool(params.get("dry_run")), progress=progress)
    except (SyncBusy, DomainError) as exc:
        job_fail(job=job, code=exc.code, message=exc.message)
        return "failed"
    job_succeed(job=job, result={"dry_run": bool(params.get("dry_run")), "summary": sync_summary(results),
                                 "agents": [r.as_dict() for r in results]})
    return "succeeded"


def periodic_sync() -> dict[str, int] | None:
    """Beat's sync of every agent; skipped (None) while another sync holds the lock."""
    try:
        with sync_lock():
            return sync_summary(agents_sync(agents=agents_for_sync()))
    except SyncBusy:
        return None
