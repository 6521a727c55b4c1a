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


def job_dispatch(*, job_id: int, kind: str) -> bool:
    """Publish one job now. Returns whether the broker took it."""
    from celery_app import app

    task, queue = TASKS[Job.Kind(kind)]
    try:
        app.send_task(task, args=[job_id], queue=queue, retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2})
    except Exception:  # the broker is down or unreachable: the sweeper will re-send
        logger.warning("job %s: publish failed; the sweeper will re-send it", job_id, exc_info=True)
        return False
    Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(enqueued_at=timezone.now())
    return True


def job_dispatch_on_commit(*, job: Job) -> None:
    job_id, kind = job.pk, job.kind
    transaction.on_commit(lambda: job_dispatch(job_id=job_id, kind=kind))
