"""Celery tasks: thin adapters that take ids and call one service.

Each one's name and queue are in apps/task_routes.py."""
from __future__ import annotations

from apps import task_routes
from apps.jobs.sweeper import jobs_sweep
from apps.schedules.services import schedules_fire_due
from celery_app import app
from workers.execution import execute_message_job, release_connection_if_busy
from workers.knowledge import execute_ingest_job
from workers.pool import get_pool
from workers.sync import execute_sync_job, periodic_sync


@app.task(name=task_routes.RUN_MESSAGE.name, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_message_task(job_id: int) -> str:
    """Run one message job. Safe to deliver twice: the claim lets one attempt through."""
    pool = get_pool()
    with pool.running():  # in flight from claim to the last write, so busy workers close connections
        try:
            outcome = execute_message_job(job_id)
        finally:  # after everything the job triggered (the session's next job is dispatched on commit)
            release_connection_if_busy(pool.stats.in_flight)
    return outcome


@app.task(name=task_routes.SWEEP_JOBS.name, ignore_result=True)
def sweep_jobs_task() -> dict[str, int]:
    """Re-send jobs whose broker message or worker was lost (beat, every 30 s)."""
    return jobs_sweep()


@app.task(name=task_routes.FIRE_SCHEDULES.name, ignore_result=True)
def fire_schedules_task() -> dict[str, int]:
    """Fire the users' schedules that are due (beat, every AGENTOS_SCHEDULE_TICK s). Not acked
    late: a tick lost with its worker is the next tick's work, as nothing of it committed."""
    return schedules_fire_due()


@app.task(name=task_routes.RUN_SYNC.name, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_sync_task(job_id: int) -> str:
    """Run one agent-sync job (queue `sync`)."""
    return execute_sync_job(job_id)


@app.task(name=task_routes.RUN_INGEST.name, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_ingest_task(job_id: int) -> str:
    """Parse, chunk and embed one uploaded document (queue `knowledge`)."""
    return execute_ingest_job(job_id)


@app.task(name=task_routes.PERIODIC_SYNC.name, ignore_result=False)
def periodic_sync_task() -> dict[str, int] | None:
    """Sync every agent (beat, every AGENTOS_SYNC_INTERVAL). Locked: never two at once."""
    return periodic_sync()
