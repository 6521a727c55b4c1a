"""Live job events (SSE, long-poll). Contract used by apps.jobs and workers:

- `job_created(*, job)`: a job's first event, `job.queued` (event 1), written by
  apps.jobs.services.job_create in the transaction that creates the job, for
  every kind of job.
- `job_status_changed(*, job)`: called inside the transaction of every later
  status transition of `job` (running, and each terminal state).
- `job_event_append(*, job, type, data)`: any other recorded event of a running
  job (tool call started/ended), called by the worker. The reply's live text
  is not recorded: it goes out on pub/sub only (`pubsub.publish_content`).

Waiting for events is in apps.events.waiting (long-poll) and apps.events.stream
(SSE), both over the process's hub (apps.events.hub).

Each event is a `JobEvent` row numbered 1, 2, 3… per job. The number is taken
by one UPDATE of the job's `event_seq` counter, whose row lock is held until commit, so numbers are gapless and
commit in order: a reader that sees event n has already seen 1..n-1. After
commit, `{"seq", "type"}` is published on the job's Redis channel; listeners
treat it as a nudge and read the rows.
"""
from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connection, transaction

from apps.common import insert_new
from apps.events.models import JobEvent
from apps.events.pubsub import publish
from apps.jobs.models import Job, status_event_type
from apps.jobs.presenters import job_to_dict

logger = logging.getLogger(__name__)

STATUS_TYPES = frozenset(status_event_type(status) for status in Job.Status.values)
TERMINAL_TYPES = frozenset(f"job.{status}" for status in Job.TERMINAL)


def _json_default(value: Any) -> Any:
    try:
        return DjangoJSONEncoder().default(value)
    except TypeError:
        return str(value)


def _json_safe(data: dict[str, Any]) -> dict[str, Any]:
    """What the JSON column will hold, decided now (a stray object becomes its str)."""
    return json.loads(json.dumps(data, default=_json_default))


def _next_seq(job_id: int, *, status: str | None = None) -> int | None:
    """Take the job's next event number, locking its row until commit, while the
    job is in `status` (or, without one, not yet ended); None when it is not."""
    table = Job._meta.db_table
    if status is not None:
        condition, params = "status = %s", [job_id, status]
    else:
        condition, params = "status <> ALL(%s)", [job_id, [str(s) for s in Job.TERMINAL]]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET event_seq = event_seq + 1 WHERE id = %s AND {condition} "
                       f"RETURNING event_seq", params)
        row = cursor.fetchone()
    return int(row[0]) if row else None


def _record(*, job: Job, seq: int, type: str, data: dict[str, Any]) -> JobEvent:
    """Inside the transaction that took `seq` (and holds the job's row lock): the event, published after commit."""
    event = insert_new(JobEvent(job_id=job.pk, seq=seq, type=type, data=_json_safe(data)))
    transaction.on_commit(partial(publish, public_id=job.public_id, seq=event.seq, type=type), robust=True)
    return event


def job_status_changed(*, job: Job, seq: int | None = None) -> None:
    """Record `job.<status>` (`job.action_required` for a paused run; data: the job as the API shows it).

    If the row has moved on from `job.status` (a cancel got in between), the
    stale transition is not recorded, so a terminal event is always a job's
    last. `seq`: the number the caller's own transition UPDATE already took
    (the claim bumps `event_seq` in the statement that claims, and holds the
    row lock until commit). No savepoint: every caller is inside the
    transaction of the transition and fails with it."""
    with transaction.atomic(savepoint=False):
        if seq is None:
            seq = _next_seq(job.pk, status=job.status)
        if seq is None:
            logger.info("job %s: %s event skipped, the job has moved on", job.public_id, job.status)
            return
        _record(job=job, seq=seq, type=job.event_type, data=job_to_dict(job))


def job_created(*, job: Job) -> None:
    """`job.queued`, written in the transaction that creates the job: nobody else
    can see the job yet, so it is event 1 with no lock and no lookup. The job
    must have been created with `event_seq=1`."""
    if job.event_seq != 1:
        raise ValueError("job_created needs a job created with event_seq=1")
    event = insert_new(JobEvent(job_id=job.pk, seq=1, type=f"job.{job.status}", data=_json_safe(job_to_dict(job))))
    transaction.on_commit(partial(publish, public_id=job.public_id, seq=event.seq, type=event.type), robust=True)


def job_event_append(*, job: Job, type: str, data: dict[str, Any]) -> None:
    """Record a progress event of an unfinished job (`tool_call.started`, …).

    Best effort: a job that has already ended gets nothing after its terminal
    event, and a database error is logged, not raised, so progress reporting
    can never fail a run."""
    if not type or len(type) > 64 or type in STATUS_TYPES:
        raise ValueError(f"{type!r} is not a progress event type (status events come from job_status_changed)")
    try:
        with transaction.atomic():
            seq = _next_seq(job.pk)
            if seq is None:
                return
            _record(job=job, seq=seq, type=type, data=data)
    except DatabaseError as exc:
        logger.warning("job %s: %s event not recorded (%s)", job.public_id, type, exc)


def job_events_since(*, job: Job, after_seq: int, limit: int | None = None) -> list[JobEvent]:
    """The job's events numbered above `after_seq`, in order (at most `limit`)."""
    events = JobEvent.objects.filter(job_id=job.pk, seq__gt=after_seq).order_by("seq")
    return list(events[:limit] if limit is not None else events)


def job_is_terminal(*, public_id: str) -> bool:
    """True when the job has ended (or no longer exists)."""
    return not Job.objects.filter(public_id=public_id).exclude(status__in=Job.TERMINAL).exists()
