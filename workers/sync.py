"""Run an agent-sync job: sync under the global lock and record progress (the claim and
the ending are workers.harness's)."""
from __future__ import annotations

import logging
from typing import Any

from apps.agents.sync import SyncBusy, SyncResult, agents_for_sync, agents_sync, sync_lock, sync_summary
from apps.common import DomainError
from apps.events.services import job_event_append
from apps.jobs.models import Job
from workers.harness import JobFailed, job_run

logger = logging.getLogger(__name__)


def execute_sync_job(job_id: int) -> str:
    """Returns what happened, for logs: skipped | succeeded | failed | dropped."""
    return job_run(job_id, kind=Job.Kind.SYNC, body=_sync, logger=logger)


def _sync(job: Job) -> dict[str, Any]:
    params = job.input or {}

    def progress(done: int, total: int, result: SyncResult) -> None:
        job_event_append(job=job, type="sync.progress",
                         data={"done": done, "total": total, "agent_id": result.agent_id, "status": result.status})

    try:
        with sync_lock():
            agents = agents_for_sync(user_id=params.get("user_id"), agent_id=params.get("agent_id"))
            results = agents_sync(agents=agents, dry_run=bool(params.get("dry_run")), progress=progress)
    except (SyncBusy, DomainError) as exc:
        raise JobFailed(exc.code, exc.message) from exc
    return {"dry_run": bool(params.get("dry_run")), "summary": sync_summary(results),
            "agents": [r.as_dict() for r in results]}


def periodic_sync() -> dict[str, int] | None:
    """Beat's sync of every agent; skipped (None) while another sync holds the lock."""
    try:
        with sync_lock():
            return sync_summary(agents_sync(agents=agents_for_sync()))
    except SyncBusy:
        return None
