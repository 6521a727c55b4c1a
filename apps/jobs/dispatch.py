"""Hand jobs to the broker. A failed publish is logged, not raised: the row is
committed and the sweeper re-sends it, so an accepted job is never lost.

Sent by task name through Celery's current app (celery_app, which `config` loads):
this app never imports the workers or the Celery app itself."""
from __future__ import annotations

import logging

from celery import current_app
from django.db import transaction
from django.utils import timezone

from apps import task_routes
from apps.jobs.models import Job

logger = logging.getLogger(__name__)

TASKS = {
    Job.Kind.MESSAGE: task_routes.RUN_MESSAGE,
    Job.Kind.SYNC: task_routes.RUN_SYNC,
    Job.Kind.INGEST: task_routes.RUN_INGEST,
}


def job_dispatch(*, job_id: int, kind: str, marked: bool = False) -> bool:
    """Publish one job now and record when (`enqueued_at`). Returns whether the broker took it.

    `marked`: the job's row already says it was enqueued (a new message job is
    written with `enqueued_at` set, saving a second write on the request path);
    then only a failed publish touches the row, clearing it."""
    task = TASKS[Job.Kind(kind)]
    try:
        current_app.send_task(task.name, args=[job_id], queue=task.queue, retry=True,
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
