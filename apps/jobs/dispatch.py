"""Hand jobs to the broker, through each user's admission window.

A failed publish is logged, not raised: the row is committed and the sweeper
re-sends it, so an accepted job is never lost.

**Fair sharing.** With AGENTOS_USER_MAX_RUNNING > 0 (20 by default), a user's
message jobs reach the broker only while fewer than that many of theirs are
*admitted* (queued with `enqueued_at` set, i.e. on their way to a worker, or
running); the rest wait in PostgreSQL, `queued` with no `enqueued_at`. Each
ending, pause or cancel of one of their jobs admits the next (highest
`priority` first, then oldest, skipping jobs whose session is still busy). So
the `agents` queue never holds more than that many messages of one user: a
backlog of 5,000 stands behind nobody, and another user's job is at most a
window's worth of messages from a free worker thread. Admission takes a
per-user PostgreSQL advisory lock, so the cap holds across web processes and
worker processes on any number of hosts; the claim itself is unchanged. Set
it to 0 for a plain first-come-first-served queue (every job published at once).

**Backpressure.** `queue_caps_check` refuses a new job (429 `queue_full`) when
its user already has AGENTOS_USER_MAX_QUEUED jobs queued, or everyone together
AGENTOS_MAX_QUEUED; the caller's transaction then writes nothing.

Sent by task name through Celery's current app (celery_app, which `config` loads):
this app never imports the workers or the Celery app itself."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from apps import task_routes
from apps.common import DomainError
from apps.jobs.models import Job
from apps.tracing import in_trace

logger = logging.getLogger(__name__)

TASKS = {
    Job.Kind.MESSAGE: task_routes.RUN_MESSAGE,
    Job.Kind.SYNC: task_routes.RUN_SYNC,
    Job.Kind.INGEST: task_routes.RUN_INGEST,
}
# pg_advisory_xact_lock(ADMISSION_LOCK, <user id>): one admission of a user's jobs at a time
ADMISSION_LOCK = 0x0913
QUEUE_FULL_RETRY_AFTER = 10


def job_dispatch(*, job_id: int, kind: str, marked: bool = False, trace_context: str = "") -> bool:
    """Publish one job now and record when (`enqueued_at`). Returns whether the broker took it.

    `marked`: the job's row already says it was enqueued (a new job is written with
    `enqueued_at` set, and an admitted one was marked by its admission, saving a
    second write); then only a failed publish touches the row, clearing it. `trace_context`:
    the job's stored one; the publish and its message headers belong to the job's trace."""
    task = TASKS[Job.Kind(kind)]
    try:
        with in_trace(trace_context):
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


def fair_sharing() -> bool:
    """Whether message jobs go through their users' admission windows (AGENTOS_USER_MAX_RUNNING > 0)."""
    return settings.AGENTOS_USER_MAX_RUNNING > 0


def admitted_on_send(kind: str) -> bool:
    """Whether a new job of `kind` waits for its user's admission window (else it is published at once)."""
    return kind == Job.Kind.MESSAGE and fair_sharing()


def job_dispatch_on_commit(*, job: Job) -> None:
    """Publish `job` once the transaction that wrote it commits: at once, or, for a
    message job under fair sharing, through its user's admission window."""
    if admitted_on_send(job.kind):
        jobs_admit_on_commit(owner_id=job.owner_id)
        return
    job_id, kind, marked, trace_context = job.pk, job.kind, job.enqueued_at is not None, job.trace_context
    transaction.on_commit(lambda: job_dispatch(job_id=job_id, kind=kind, marked=marked, trace_context=trace_context))


# Admit the user's waiting message jobs while the window has room: highest priority,
# then oldest, of those nothing holds back (not cancelled, no earlier unfinished message
# in the session). The window is the user's quota, else the setting; 0 is no limit
# (LIMIT NULL). The statement runs after the advisory lock is granted, so it counts
# every admission committed before it (READ COMMITTED: a snapshot per statement).
_ADMIT_SQL = """
WITH cap AS (
    SELECT COALESCE((SELECT max_running FROM accounts_userquota WHERE user_id = %(owner)s), %(default)s) AS n
)
UPDATE jobs_job SET enqueued_at = %(now)s
 WHERE id IN (
    SELECT j.id FROM jobs_job AS j
     WHERE j.owner_id = %(owner)s AND j.kind = 'message' AND j.status = 'queued' AND j.enqueued_at IS NULL
       AND j.cancel_requested_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM jobs_job AS earlier
                        WHERE earlier.session_id = j.session_id AND earlier.id < j.id
                          AND earlier.kind = 'message' AND earlier.status <> ALL(%(terminal)s))
     ORDER BY j.priority DESC, j.id
     LIMIT (SELECT CASE WHEN cap.n <= 0 THEN NULL
                        ELSE GREATEST(cap.n - (SELECT count(*) FROM jobs_job AS a
                                                WHERE a.owner_id = %(owner)s AND a.kind = 'message'
                                                  AND (a.status = 'running'
                                                       OR (a.status = 'queued' AND a.enqueued_at IS NOT NULL))), 0)
                   END FROM cap))
RETURNING id, trace_context
"""


def jobs_admit(*, owner_id: int) -> int:
    """Admit and publish what the user's window has room for; returns how many were published.
    Two statements: the user's advisory lock, then the admitting UPDATE."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADMISSION_LOCK, owner_id])
            cursor.execute(_ADMIT_SQL, {"now": timezone.now(), "owner": owner_id,
                                        "default": settings.AGENTOS_USER_MAX_RUNNING,
                                        "terminal": [str(s) for s in Job.TERMINAL]})
            admitted = sorted(cursor.fetchall())
    return sum(job_dispatch(job_id=job_id, kind=Job.Kind.MESSAGE, marked=True, trace_context=trace_context)
               for job_id, trace_context in admitted)


def jobs_admit_on_commit(*, owner_id: int) -> None:
    """Once the caller's transaction commits (a job written, ended, paused or cancelled): admit."""
    if fair_sharing():
        transaction.on_commit(lambda: _admit_logged(owner_id), robust=True)


def _admit_logged(owner_id: int) -> None:
    try:
        jobs_admit(owner_id=owner_id)
    except Exception:  # the database is gone for now: the sweeper admits what waits
        logger.warning("user %s: admission failed; the sweeper will admit", owner_id, exc_info=True)


def owners_waiting(*, before: datetime, limit: int = 1000) -> list[int]:
    """Users with message jobs waiting for admission since before `before` (for the sweeper)."""
    return list(Job.objects.filter(status=Job.Status.QUEUED, kind=Job.Kind.MESSAGE, enqueued_at__isnull=True,
                                   created_at__lt=before).values_list("owner_id", flat=True).distinct()[:limit])


# --- backpressure ----------------------------------------------------------------------------------------

class QueueFull(DomainError):
    status = 429

    def __init__(self, message: str) -> None:
        super().__init__("queue_full", message)
        self.retry_after = QUEUE_FULL_RETRY_AFTER


_CAPS_SQL = """
SELECT COALESCE((SELECT max_queued FROM accounts_userquota WHERE user_id = %(owner)s), %(default)s),
       (SELECT count(*) FROM jobs_job WHERE owner_id = %(owner)s AND status = 'queued'),
       CASE WHEN %(total)s > 0 THEN (SELECT count(*) FROM jobs_job WHERE status = 'queued') ELSE 0 END
"""


def queue_caps_check(*, owner_id: int) -> None:
    """Refuse a new job when its user's queue, or everyone's, is full (429 queue_full). One
    statement: the user's quota, their queued jobs, everyone's."""
    total = settings.AGENTOS_MAX_QUEUED
    with connection.cursor() as cursor:
        cursor.execute(_CAPS_SQL, {"owner": owner_id, "default": settings.AGENTOS_USER_MAX_QUEUED, "total": total})
        cap, mine, everyone = cursor.fetchone()
    if cap > 0 and mine >= cap:
        raise QueueFull(f"You have {cap} jobs waiting already; retry once some have started.")
    if total > 0 and everyone >= total:
        raise QueueFull("The service has too many jobs waiting; retry in a few seconds.")


def queue_depth() -> dict[str, Any]:
    """For staff: queued and running jobs per user, and the age of the oldest queued one."""
    rows = (Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING])
            .values_list("owner__username", "status").annotate(count=Count("id")).order_by())
    users: dict[str, dict[str, int]] = {}
    for username, status, count in rows:
        users.setdefault(username, {"queued": 0, "running": 0})[status] = count
    oldest = Job.objects.filter(status=Job.Status.QUEUED).order_by("created_at").values_list(
        "created_at", flat=True).first()
    return {"queued": sum(u["queued"] for u in users.values()), "running": sum(u["running"] for u in users.values()),
            "oldest_queued_seconds": round((timezone.now() - oldest).total_seconds(), 1) if oldest else None,
            "users": [{"username": name, **counts} for name, counts in sorted(users.items())]}
