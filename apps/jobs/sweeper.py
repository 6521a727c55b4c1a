"""The sweeper (Celery beat, every AGENTOS_SWEEP_INTERVAL seconds).

PostgreSQL is the source of truth and Redis may lose everything, so this is
what makes "no accepted job is lost" hold: it re-sends jobs whose broker
message was lost, hands jobs whose worker died (lease ran out) to another
worker, ends jobs past their deadline, and ends paused jobs whose action
waited past its expiry (apps.jobs.actions). Running it twice is harmless:
claims let exactly one attempt through.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps import metrics
from apps.jobs.actions import paused_jobs_due
from apps.jobs.dispatch import fair_sharing, job_dispatch, jobs_admit, owners_waiting
from apps.jobs.lifecycle import earlier_unfinished_in_session, job_ended_effects
from apps.jobs.models import IdempotencyRecord, Job

BATCH = 1000


def jobs_sweep(*, now: Any = None) -> dict[str, int]:
    now = now or timezone.now()
    expired = _expire_overdue(now=now) + _expire_paused(now=now)
    stale = now - timedelta(seconds=settings.AGENTOS_REQUEUE_AFTER)
    # queued and never published, or published long ago: the message was lost
    lost = Job.objects.filter(status=Job.Status.QUEUED).filter(
        Q(enqueued_at__isnull=True, created_at__lt=stale) | Q(enqueued_at__lt=stale))
    if fair_sharing():
        # a message job never published is waiting for its user's admission window:
        # admit (an admission lost with a process that died after its commit), never bypass it
        lost = lost.exclude(kind=Job.Kind.MESSAGE, enqueued_at__isnull=True)
        for owner_id in owners_waiting(before=stale):
            jobs_admit(owner_id=owner_id)
    # running under a lease that ran out: the worker died mid-run
    orphaned = Job.objects.filter(status=Job.Status.RUNNING, lease_expires_at__lt=now)
    resent = 0
    fields = ("id", "kind", "trace_context")  # a re-send stays in the job's trace
    for reason, jobs in (("lost_message", lost.exclude(earlier_unfinished_in_session())), ("lease_expired", orphaned)):
        sent = sum(job_dispatch(job_id=job.pk, kind=job.kind, trace_context=job.trace_context)
                   for job in list(jobs.only(*fields)[:BATCH]))
        metrics.sweeper_requeued(reason=reason, count=sent)
        resent += sent
    forgotten, _ = IdempotencyRecord.objects.filter(
        created_at__lt=now - timedelta(seconds=settings.AGENTOS_IDEMPOTENCY_TTL)).delete()
    return {"resent": resent, "expired": expired, "idempotency_keys_forgotten": forgotten}


def _expire_overdue(*, now: Any) -> int:
    overdue = list(Job.objects.filter(deadline_at__lt=now).exclude(status__in=Job.TERMINAL)
                   .values_list("pk", flat=True)[:BATCH])
    # a running attempt's final write is fenced on status=running, so it writes nothing now
    return _end_each(overdue, ~Q(status__in=Job.TERMINAL), status=Job.Status.EXPIRED, error_code="deadline_exceeded",
                     finished_at=now, error_message="The job did not finish before its deadline.",
                     cancel_requested_at=now, lease_expires_at=None)


def _expire_paused(*, now: Any) -> int:
    # a decision that got in first (it locks the row) has queued the job: then this matches nothing
    return _end_each(paused_jobs_due(now=now, limit=BATCH), Q(status=Job.Status.REQUIRES_ACTION),
                     status=Job.Status.EXPIRED, error_code="action_expired", finished_at=now,
                     error_message="No decision came before the pending action expired.")


def _end_each(job_ids: list[int], still: Q, **ending: Any) -> int:
    """End each job that still matches `still` with `ending`, one transaction each, with the
    effects of every ending; returns how many ended."""
    count = 0
    for job_id in job_ids:
        with transaction.atomic():
            if Job.objects.filter(still, pk=job_id).update(**ending):
                job_ended_effects(job_id=job_id)
                count += 1
    return count
