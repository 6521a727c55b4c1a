"""A job's life after acceptance: claim, lease, and its ending (succeeded, failed, cancelled).

A job is claimed with a conditional UPDATE (zero rows means someone else has
it, it must wait for an earlier message of its session, or it is past its
deadline) and every ending is a write fenced on the claim's lease token, so a
redelivered or duplicate task can never write a second reply. A running
attempt renews its lease; when its worker dies the lease runs out and the
sweeper hands the job to another worker.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any, Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from apps import metrics
from apps.agents.models import Agent
from apps.chat.models import ChatMessage, ChatSession
from apps.chat.services import session_changed
from apps.common import columns, fetch_instances, insert_new
from apps.events.services import job_status_changed
from apps.jobs.actions import job_actions_close, pause_record
from apps.jobs.dispatch import fair_sharing, job_dispatch, jobs_admit_on_commit
from apps.jobs.models import Job
from apps.tracing import traced
from apps.usage.services import usage_record
from apps.webhooks.services import webhook_outbox_for_job

logger = logging.getLogger(__name__)


def job_ended_effects(*, job_id: int, job: Job | None = None) -> Job:
    """What follows every ending of a job, inside the transaction that ended it;
    each effect is its own call. Pass `job` when the caller holds it with the
    fields its ending wrote, to skip re-reading it."""
    if job is None:
        job = Job.objects.select_related("agent", "session").get(pk=job_id)
    job_actions_close(job=job)  # a paused job's undecided actions end with it
    job_status_changed(job=job)  # its terminal event: `job.<status>`, the job's last
    webhook_outbox_for_job(job=job)  # its webhook delivery row, when it has a callback URL
    job_dispatch_next_in_session_on_commit(job=job)
    metrics.job_ended(job=job)
    return job


def _ending(job: Job, **fields: Any) -> Job:
    """`job` as the fenced UPDATE that ended it left the row."""
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def earlier_unfinished_in_session() -> Exists:
    return Exists(Job.objects.filter(session=OuterRef("session"), id__lt=OuterRef("id"),
                                     kind=Job.Kind.MESSAGE).exclude(status__in=Job.TERMINAL))


def _claimable(now: Any) -> Q:
    """Status and lease allow a claim: queued, or running under a lease that ran out."""
    return Q(status=Job.Status.QUEUED) | Q(status=Job.Status.RUNNING, lease_expires_at__lt=now)


def _endings(now: Any) -> tuple[tuple[Q, str, str, str], ...]:
    """Why a job whose status and lease allow a claim may not run any more, and how it ends then."""
    return (
        (Q(cancel_requested_at__isnull=False), Job.Status.CANCELLED, "cancelled", "Cancelled by the client."),
        (Q(deadline_at__lt=now), Job.Status.EXPIRED, "deadline_exceeded",
         "The job did not finish before its deadline."),
        (Q(attempts__gte=settings.AGENTOS_MAX_ATTEMPTS), Job.Status.FAILED, "attempts_exhausted",
         f"Gave up after {settings.AGENTOS_MAX_ATTEMPTS} attempts (its worker was lost each time)."),
    )


def claim_rule(now: Any) -> Q:
    """The claim's rule in the ORM's words, made of the pieces the endings and the
    sweeper use: status and lease allow it, nothing ends it, and no earlier message
    of its session is unfinished. The claim itself runs `_CLAIM_SQL`, its copy in
    SQL; tests/test_hot_selectors.py holds the two equal on every combination."""
    rule = _claimable(now) & ~earlier_unfinished_in_session()
    for condition, *_ in _endings(now):
        rule &= ~condition
    return rule


def job_claim(*, job_id: int, worker: str) -> Job | None:
    """queued (or running with an expired lease) -> running, for one attempt.

    Returns None when the job is finished, held by a live attempt, must wait
    for an earlier message of its session, is past its deadline, or is out of
    attempts (the last two end it)."""
    now = timezone.now()
    with transaction.atomic():  # the claim and its `job.running` event commit together
        seq = _claim_row(job_id=job_id, now=now, worker=worker)
        if seq is not None:
            job = _claimed_job(job_id)
            job_status_changed(job=job, seq=seq)
            metrics.job_claimed(job=job)
            return job
    _end_unclaimable(job_id=job_id, now=now)
    return None


def _claim_row(*, job_id: int, now: Any, worker: str) -> int | None:
    """Run the claim's UPDATE: the number of the claimed job's `job.running` event,
    or None when the claim rule refused it."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, {
            "id": job_id, "now": now, "token": uuid.uuid4().hex, "worker": worker[:200],
            "lease": now + timedelta(seconds=settings.AGENTOS_LEASE_SECONDS),
            "max_attempts": settings.AGENTOS_MAX_ATTEMPTS, "terminal": [str(s) for s in Job.TERMINAL]})
        claimed = cursor.fetchone()
    return int(claimed[0]) if claimed is not None else None


# The claim, as one statement (which also numbers its `job.running` event):
# every job's hot path starts here, and the ORM spent more CPU composing it
# than PostgreSQL spends running it. Its WHERE is `claim_rule`, written in SQL;
# tests/test_hot_selectors.py runs both on every combination of status, lease,
# cancel, deadline, attempts and session order and requires the same answer.
_CLAIM_SQL = """
UPDATE jobs_job AS j
   SET status = 'running', lease_token = %(token)s, worker = %(worker)s, lease_expires_at = %(lease)s,
       started_at = %(now)s, attempts = j.attempts + 1, event_seq = j.event_seq + 1
 WHERE j.id = %(id)s
   AND (j.status = 'queued' OR (j.status = 'running' AND j.lease_expires_at < %(now)s))
   AND j.attempts < %(max_attempts)s
   AND j.cancel_requested_at IS NULL
   AND (j.deadline_at IS NULL OR j.deadline_at >= %(now)s)
   AND NOT EXISTS (SELECT 1 FROM jobs_job AS earlier
                    WHERE earlier.session_id = j.session_id AND earlier.id < j.id
                      AND earlier.kind = 'message' AND earlier.status <> ALL(%(terminal)s))
RETURNING j.event_seq
"""


_CLAIMED_JOB_SQL = (
    f"SELECT {columns(Job, 'j')}, {columns(Agent, 'a')}, {columns(ChatSession, 's')}, {columns(get_user_model(), 'u')} "
    f"FROM {Job._meta.db_table} j LEFT JOIN {Agent._meta.db_table} a ON a.id = j.agent_id "
    f"LEFT JOIN {ChatSession._meta.db_table} s ON s.id = j.session_id "
    f"JOIN {get_user_model()._meta.db_table} u ON u.id = j.owner_id WHERE j.id = %s")


def _claimed_job(job_id: int) -> Job:
    """The claimed job with its agent, session and owner, in one statement (apps.common.fetch_instances)."""
    job, agent, session, owner = fetch_instances(_CLAIMED_JOB_SQL, [job_id], Job, Agent, ChatSession,  # type: ignore[misc]
                                                 get_user_model())
    job.agent, job.session, job.owner = agent, session, owner  # type: ignore[union-attr]
    return job  # type: ignore[return-value]


@transaction.atomic
def _end_unclaimable(*, job_id: int, now: Any) -> None:
    """A job nobody may run any more ends here: cancelled, expired or out of attempts."""
    for condition, status, code, message in _endings(now):
        if Job.objects.filter(_claimable(now), condition, pk=job_id).update(
                status=status, error_code=code, error_message=message, finished_at=now, lease_token="",
                lease_expires_at=None):
            logger.warning("job %s: ended %s without running", job_id, status)
            job_ended_effects(job_id=job_id)
            return


def job_leases_renew(*, leases: Iterable[tuple[int, str]]) -> list[int]:
    """Extend the leases of running attempts; returns the ids that must stop
    (cancel requested, expired, or taken over by another attempt)."""
    pairs = list(leases)
    if not pairs:
        return []
    match = Q()
    for job_id, token in pairs:
        match |= Q(pk=job_id, lease_token=token)
    Job.objects.filter(match, status=Job.Status.RUNNING).update(
        lease_expires_at=timezone.now() + timedelta(seconds=settings.AGENTOS_LEASE_SECONDS))
    tokens = dict(pairs)
    rows = Job.objects.filter(pk__in=tokens).values_list("pk", "status", "lease_token", "cancel_requested_at")
    return [pk for pk, status, token, cancel_at in rows
            if status != Job.Status.RUNNING or token != tokens[pk] or cancel_at is not None]


def _fenced(job: Job) -> Any:
    return Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_token=job.lease_token)


# A message job's success, fenced on the lease and refused once a cancel is requested,
# with its session's updated_at, as one statement: every reply is written through it, and
# the ORM spent more CPU composing the two UPDATEs than PostgreSQL spends running them.
# It locks the job's row before the session's, as the ORM's two statements did.
_SUCCEED_SQL = f"""
WITH done AS (
    UPDATE {Job._meta.db_table}
       SET status = %(status)s, result = %(result)s, finished_at = %(now)s, lease_expires_at = NULL
     WHERE id = %(id)s AND status = %(running)s AND lease_token = %(token)s AND cancel_requested_at IS NULL
 RETURNING session_id
), touched AS (
    UPDATE {ChatSession._meta.db_table} SET updated_at = %(now)s WHERE id IN (SELECT session_id FROM done)
)
SELECT count(*) FROM done
"""


def _succeed_row(*, job: Job, result: dict[str, Any], now: Any) -> bool:
    """Run `_SUCCEED_SQL`: whether this attempt still held the job and no cancel had arrived."""
    with connection.cursor() as cursor:
        cursor.execute(_SUCCEED_SQL, {
            "id": job.pk, "token": job.lease_token, "now": now, "status": str(Job.Status.SUCCEEDED),
            "running": str(Job.Status.RUNNING),
            "result": Job._meta.get_field("result").get_db_prep_save(result, connection)})
        return bool(cursor.fetchone()[0])


@traced("job.reply_write")
@transaction.atomic
def job_succeed_message(*, job: Job, content: str, tool_calls: list[dict[str, Any]],
                        metrics: dict[str, Any], sources: list[dict[str, Any]] | None = None) -> ChatMessage | None:
    """Write the reply and finish the job in one transaction, fenced on the lease.

    Returns None (and writes nothing) when this attempt no longer holds the job,
    or when a cancel arrived while it ran (then the job ends cancelled)."""
    reply = ChatMessage(session_id=job.session_id, role=ChatMessage.Role.ASSISTANT, content=content,
                        tool_calls=tool_calls, metrics=metrics, sources=sources or [], job=job)
    result = {"message_id": reply.public_id, "content": content, "tool_calls": tool_calls, "metrics": metrics,
              "sources": sources or []}
    now = timezone.now()
    done = dict(status=Job.Status.SUCCEEDED, result=result, finished_at=now, lease_expires_at=None)
    if not _succeed_row(job=job, result=result, now=now):
        if _fenced(job).filter(cancel_requested_at__isnull=False).exists():
            job_end_cancelled(job=job)  # the cancel arrived while it ran
        else:
            logger.info("job %s: attempt lost its lease; reply dropped", job.public_id)
        return None
    insert_new(reply)
    session_changed(session_id=job.session.public_id)
    job_ended_effects(job_id=job.pk, job=_ending(job, **done))
    # the run's figures, in the reply's transaction, and last: concurrent replies of one user and
    # model share a rollup row, locked from this statement to the commit (apps.usage)
    usage_record(job=job, metrics=metrics, tool_calls=tool_calls)
    return reply


@transaction.atomic
def job_pause(*, job: Job, run_state: dict[str, Any], actions: list[dict[str, Any]]) -> str:
    """The run stopped for a person: store it and its pending actions, and release
    the job (`requires_action`: no lease, no worker) in one transaction, fenced on
    the lease, with its `job.action_required` event and webhook. Returns what
    happened: paused | cancelled (a cancel arrived while it ran) | dropped."""
    now = timezone.now()
    number = job.pauses + 1
    paused = dict(status=Job.Status.REQUIRES_ACTION, pauses=number, lease_token="", lease_expires_at=None)
    if _fenced(job).filter(cancel_requested_at__isnull=True).update(**paused) != 1:
        if _fenced(job).filter(cancel_requested_at__isnull=False).exists():
            return "cancelled" if job_end_cancelled(job=job) else "dropped"
        logger.info("job %s: attempt lost its lease; pause dropped", job.public_id)
        return "dropped"
    pause_record(job=job, number=number, run_state=run_state, actions=actions, now=now)
    jobs_admit_on_commit(owner_id=job.owner_id)  # a paused job holds no place in its user's window
    _ending(job, **paused)
    job_status_changed(job=job)  # `job.action_required`, with the pending actions in its data
    webhook_outbox_for_job(job=job)
    return "paused"


@transaction.atomic
def job_succeed(*, job: Job, result: dict[str, Any]) -> bool:
    """Finish a job that writes no chat reply (sync, ingest), fenced on the lease."""
    done = dict(status=Job.Status.SUCCEEDED, result=result, finished_at=timezone.now(), lease_expires_at=None)
    if _fenced(job).update(**done) != 1:
        return False
    job_ended_effects(job_id=job.pk, job=_ending(job, **done))
    return True


@transaction.atomic
def job_fail(*, job: Job, code: str, message: str) -> bool:
    """Fenced like success: only the attempt holding the job may fail it."""
    failed = dict(status=Job.Status.FAILED, error_code=code[:64], error_message=message[:4000],
                  finished_at=timezone.now(), lease_expires_at=None)
    if _fenced(job).update(**failed) != 1:
        return False
    job_ended_effects(job_id=job.pk, job=_ending(job, **failed))
    return True


@transaction.atomic
def job_end_cancelled(*, job: Job) -> bool:
    """Record that the running attempt stopped at a safe point after a cancel was
    requested (apps.jobs.services.job_cancel_request): the job ends cancelled, no reply."""
    stopped = dict(status=Job.Status.CANCELLED, error_code="cancelled", error_message="Cancelled by the client.",
                   finished_at=timezone.now(), lease_expires_at=None)
    if _fenced(job).update(**stopped) != 1:
        return False
    job_ended_effects(job_id=job.pk, job=_ending(job, **stopped))
    return True


def job_dispatch_next_in_session_on_commit(*, job: Job) -> None:
    """A message job that ended lets the next message of its session start, once its ending
    commits; under fair sharing its user's admission window admits the next (which is how a
    session's next message is published then, apps.jobs.dispatch)."""
    if job.kind != Job.Kind.MESSAGE:
        return
    if fair_sharing():
        jobs_admit_on_commit(owner_id=job.owner_id)
        return
    if job.session_id is None:
        return
    job_id, session_id = job.pk, job.session_id
    transaction.on_commit(lambda: job_dispatch_next_in_session(job_id=job_id, session_id=session_id))


# after every message job's ending (the ORM's query cost more CPU to compose than to run)
_NEXT_IN_SESSION_SQL = (f"SELECT id, trace_context FROM {Job._meta.db_table} WHERE session_id = %(session)s "
                        "AND id > %(job)s AND kind = %(kind)s AND status = %(queued)s ORDER BY id LIMIT 1")


def job_dispatch_next_in_session(*, job_id: int, session_id: int) -> None:
    """After a message job ends, start the next one waiting in its session."""
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_IN_SESSION_SQL, {"session": session_id, "job": job_id, "kind": str(Job.Kind.MESSAGE),
                                              "queued": str(Job.Status.QUEUED)})
        successor = cursor.fetchone()
    if successor is not None:
        job_dispatch(job_id=successor[0], kind=Job.Kind.MESSAGE, trace_context=successor[1])
