"""Celery tasks: thin adapters that take ids and call one service."""
from __future__ import annotations

from celery_app import app


@app.task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_message_task(job_id: int) -> str:
    """Run one message job. Safe to deliver twice: the claim lets one attempt through."""
    from workers.execution import execute_message_job, release_connection_if_busy
    from workers.pool import get_pool

    pool = get_pool()
    with pool.running():  # in flight from claim to the last write, so busy workers close connections
        try:
            outcome = execute_message_job(job_id)
        finally:  # after everything the job triggered (the session's next job is dispatched on commit)
            release_connection_if_busy(pool.stats.in_flight)
    return outcome


@app.task(ignore_result=True)
def sweep_jobs_task() -> dict[str, int]:
    """Re-send jobs whose broker message or worker was lost (beat, every 30 s)."""
    from apps.jobs.sweeper import jobs_sweep

    return jobs_sweep()


@app.task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_sync_task(job_id: int) -> str:
    """Run one agent-sync job (queue `sync`)."""
    from workers.sync import execute_sync_job

    return execute_sync_job(job_id)


@app.task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_ingest_task(job_id: int) -> str:
    """Parse, chunk and embed one uploaded document (queue `knowledge`)."""
    from workers.knowledge import execute_ingest_job

    return execute_ingest_job(job_id)


@app.task(ignore_result=False)
def periodic_sync_task() -> dict[str, int] | None:
    """Sync every agent (beat, every AGENTOS_SYNC_INTERVAL). Locked: never two at once."""
    from workers.sync import periodic_sync

    return periodic_sync()
