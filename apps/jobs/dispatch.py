"""Hand jobs to the broker. A failed publish is logged, not raised: the row is
committed and the sweeper re-sends it, so an accepted job is never lost."""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from apps.jobs.models import Job

logger = logging.getLogger(__name__)

TASKS = {
    Job.Kind.MESSAGE: ("workers.tasks.run_message_task", "agents"),
    Job.Kind.SYNC: ("workers.tasks.run_sync_task", "sync"),
    Job.Kind.INGEST: ("workers.tasks.run_ingest_task", "knowledge"),
}


def job_dispatch(*, job_id: int, kind: str, marked: bool = False) -> bool:
    """Publish one job now and record when (`enqueued_at`). Returns whether the broker took it.

    `marked`: the job's row already says it was enqueued (a new message job is
    written with `enqueued_at` set, saving a second write on the request path);
    then only a failed publish touches the row, clearing it."""
    from celery_app import app

    task, queue = TASKS[Job.Kind(kind)]
    try:
        app.send_task(task, args=[job_id], queue=queue, retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2})
    except Exception:  # the broker is down or unreachable: the sweeper will re-send
        logger.warning("job %s: publish failed; the sweeper will re-send it", job_id, exc_info=True)
        if marked:
            Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(enqueued_at=None)
        return False
    if not marked:
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(enqueued_at=timezone.now())
    return True


def job_dispatch_on_commit(*, job: Job) -> None:
    """Publish `job` once the transaction that wrote it commits."""
    job_id, kind, marked = job.pk, job.kind, job.enqueued_at is not None
    transaction.on_commit(lambda: job_dispatch(job_id=job_id, kind=kind, marked=marked))
