"""Accepting jobs and requests to cancel them: what the API does to the job table.

The worker side of a job's life is in apps.jobs.lifecycle; the sweeper that
re-sends lost work is in apps.jobs.sweeper.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps import metrics
from apps.agents.models import Agent
from apps.agents.selectors import agent_get_visible
from apps.agents.sync import agents_for_sync
from apps.chat.models import ChatMessage, ChatSession
from apps.chat.services import session_changed, session_create
from apps.common import DomainError, NotFound, insert_new, public_id
from apps.events.services import job_created, job_status_changed
from apps.jobs.actions import pause_record, pause_settle
from apps.jobs.dispatch import admitted_on_send, job_dispatch_on_commit, queue_caps_check
from apps.jobs.lifecycle import job_ended_effects
from apps.jobs.models import Job, RunPause
from apps.jobs.retryable import job_retryable
from apps.knowledge.models import Document
from apps.tracing import current_traceparent
from apps.usage.services import usage_record
from apps.webhooks.services import callback_url_validate

MULTITASK = ("enqueue", "reject", "interrupt")
PRIORITIES = {label: value for value, label in Job.Priority.choices}


def message_validate(message: object) -> str:
    if not isinstance(message, str) or not message.strip():
        raise DomainError("invalid_input", "message must be a non-empty string.")
    limit = settings.AGENTOS_MAX_MESSAGE_CHARS
    if len(message) > limit:
        raise DomainError("message_too_long", f"message is longer than {limit} characters.", status=413)
    if "\x00" in message:
        raise DomainError("invalid_input", "message must not contain NUL characters.")
    return message


def job_deadline(timeout: int | None) -> timedelta:
    if timeout is None:
        return timedelta(seconds=settings.AGENTOS_JOB_TIMEOUT)
    cap = settings.AGENTOS_JOB_TIMEOUT_MAX
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= cap:
        raise DomainError("invalid_timeout", f"timeout must be a whole number of seconds from 1 to {cap}.")
    return timedelta(seconds=timeout)


def job_create(*, owner: AbstractBaseUser, kind: str, input: dict[str, Any], callback_url: str = "",
               deadline: timedelta | None = None, agent: Agent | None = None,
               session: ChatSession | None = None, priority: int = Job.Priority.NORMAL,
               retry_of: Job | None = None) -> Job:
    """Write a new job of any kind with its first event, `job.queued` (event 1), and
    publish it once the caller's transaction commits. Call it inside that transaction,
    after validating the request: the caller writes whatever else belongs with the job
    (its user message, its document) in the same transaction. `deadline`: how long the
    job may take from now (AGENTOS_JOB_TIMEOUT by default).

    First the queue caps (429 `queue_full`, nothing written). Then two statements: the
    job (one INSERT, apps.common.insert_new) and its event. A job published at once is
    written already marked enqueued, so publishing costs no second write unless the
    publish fails; a message job under fair sharing is written waiting, and its user's
    admission window publishes it (apps.jobs.dispatch)."""
    queue_caps_check(owner_id=owner.pk)
    now = timezone.now()
    job = insert_new(Job(owner=owner, kind=kind, agent=agent, session=session, callback_url=callback_url,
                         deadline_at=now + (deadline if deadline is not None else job_deadline(None)), input=input,
                         priority=priority, retry_of=retry_of,
                         trace_context=current_traceparent(),  # its trace: the accepting request's span
                         event_seq=1,  # its `job.queued` event, written below
                         # published on commit (a failed publish clears it), or admitted later
                         enqueued_at=None if admitted_on_send(kind) else now))
    job_created(job=job)
    metrics.job_accepted(job=job)
    job_dispatch_on_commit(job=job)
    return job


@transaction.atomic
def message_send(*, user: AbstractBaseUser, agent: Agent, message: str, session: ChatSession | None = None,
                 callback_url: str = "", multitask: str = "enqueue", timeout: int | None = None,
                 priority: str = "normal") -> Job:
    """Accept a message: the user's message and its job are written together,
    and the job is published only after the transaction commits.

    `priority` (`low`, `normal`, `high`) orders this user's own waiting messages
    when their admission window is full (apps.jobs.dispatch); it never passes
    another user's jobs, and a session's order comes first.

    `multitask` says what to do when the session is busy with an earlier message:
    `enqueue` it behind that one, `reject` it (409 session_busy), or `interrupt`
    (cancel the earlier ones, then run this)."""
    message_validate(message)
    if multitask not in MULTITASK:
        raise DomainError("invalid_multitask", f"multitask must be one of {', '.join(MULTITASK)}.")
    if priority not in PRIORITIES:
        raise DomainError("invalid_priority", f"priority must be one of {', '.join(PRIORITIES)}.")
    deadline = job_deadline(timeout)
    if callback_url:
        callback_url_validate(url=callback_url)
    created = session is None
    if session is None:
        session = session_create(user=user, agent=agent, title=message.strip()[:80])
    elif session.agent_id != agent.pk:
        raise DomainError("session_agent_mismatch", "that session belongs to another agent.", status=409)
    else:
        # one sender at a time per session: the busy check and the insert must not interleave
        ChatSession.objects.select_for_update().filter(pk=session.pk).first()
        _apply_multitask(session=session, multitask=multitask)
    if not created:
        ChatSession.objects.filter(pk=session.pk).update(updated_at=timezone.now())
        session_changed(session_id=session.public_id)
    message_id = public_id("msg")
    job = job_create(owner=user, kind=Job.Kind.MESSAGE, agent=agent, session=session, callback_url=callback_url,
                     deadline=deadline, input={"message_id": message_id}, priority=PRIORITIES[priority])
    insert_new(ChatMessage(public_id=message_id, session=session, role=ChatMessage.Role.USER, content=message,
                           job=job))
    return job


def _apply_multitask(*, session: ChatSession, multitask: str) -> None:
    busy = Job.objects.filter(session=session, kind=Job.Kind.MESSAGE).exclude(status__in=Job.TERMINAL)
    if multitask == "enqueue" or not busy.exists():
        return
    if multitask == "reject":
        raise DomainError("session_busy", "The session is still answering an earlier message.", status=409)
    for job in busy.order_by("id"):
        job_cancel_request(job=job)


@transaction.atomic
def job_cancel_request(*, job: Job) -> Job:
    """The client asks for `job` to stop. A queued job, or a paused one waiting for a
    decision, ends cancelled now and never (re)starts; a running one is marked, and its
    attempt stops at its next safe point, writes no reply and ends itself cancelled
    (apps.jobs.lifecycle.job_end_cancelled); a finished one cannot be cancelled (409 job_finished)."""
    now = timezone.now()
    locked = Job.objects.select_for_update().get(pk=job.pk)
    if locked.is_terminal:
        raise DomainError("job_finished", f"The job already ended {locked.status}.", status=409)
    if locked.status in (Job.Status.QUEUED, Job.Status.REQUIRES_ACTION):
        Job.objects.filter(pk=job.pk).update(status=Job.Status.CANCELLED, cancel_requested_at=now,
                                             error_code="cancelled", error_message="Cancelled by the client.",
                                             finished_at=now)
        return job_ended_effects(job_id=job.pk)
    if locked.cancel_requested_at is None:
        Job.objects.filter(pk=job.pk).update(cancel_requested_at=now)
    return Job.objects.select_related("agent", "session").get(pk=job.pk)


@transaction.atomic
def sync_job_create(*, user: AbstractBaseUser, agent_id: str | None = None, user_id: int | None = None,
                    dry_run: bool = False, callback_url: str = "") -> Job:
    """Queue an agent sync (queue `sync`); it is a job like any other: poll, wait, events, webhook."""
    agents_for_sync(user_id=user_id, agent_id=agent_id)  # refuse an unknown agent now, not in the worker
    if callback_url:
        callback_url_validate(url=callback_url)
    return job_create(owner=user, kind=Job.Kind.SYNC, callback_url=callback_url,
                      input={"agent_id": agent_id, "user_id": user_id, "dry_run": dry_run})


@transaction.atomic
def message_record(*, user: AbstractBaseUser, agent: Agent, session: ChatSession, run_id: str, message: str,
                   reply: str | None, tool_calls: list[dict[str, Any]] | None = None,
                   metrics: dict[str, Any] | None = None, error: str = "") -> Job:
    """Record a run that already happened in agno's AgentOS server as a finished
    message job with its two messages, so the Django session stays the one
    transcript every interface reads. Idempotent on the run id: agno saves a run
    more than once. `reply=None` records a failed run (no assistant message)."""
    existing = Job.objects.filter(public_id=_agentos_job_id(run_id)).first()
    if existing is not None:
        return existing
    now = timezone.now()
    succeeded = reply is not None
    job = _agentos_job(user=user, agent=agent, session=session, run_id=run_id, message=message, now=now,
                       status=Job.Status.SUCCEEDED if succeeded else Job.Status.FAILED,
                       error_code="" if succeeded else "model_error", error_message=error[:4000], finished_at=now)
    if reply is not None:
        job.result = _agentos_reply(job=job, reply=reply, tool_calls=tool_calls, metrics=metrics)
        job.save(update_fields=["result"])
    _session_touched(session=session, now=now, message=message)
    job_ended_effects(job_id=job.pk)
    if succeeded:  # last: the user's rollup row stays locked only for the commit (apps.usage)
        usage_record(job=job, metrics=metrics or {}, tool_calls=tool_calls or [])
    return job


# `Job.worker` of a paused AgentOS run while a continue of it is in flight
CONTINUING = "agentos-continue"
# the fields a claim set, as they are once it is over (the run recorded, or the request ended)
_UNCLAIMED: dict[str, Any] = {"lease_expires_at": None, "worker": "agentos"}


def agentos_continue_claim(*, user: AbstractBaseUser, run_id: str) -> bool | None:
    """Before AgentOS's continue endpoint goes on with the user's paused run: True when
    this request may continue it, False when it must not (another continue of it is in
    flight, or it was decided over the Opie API and is queued or running in a worker),
    None when there is no such unfinished run of the user's (agno answers that itself).

    The claim is the `requires_action` job's lease, taken by one conditional UPDATE, so
    of two continues of the same run only one runs its tools. It lasts a job's timeout
    (AGENTOS_JOB_TIMEOUT) at most: a server that died mid-continue does not hold it for
    ever. Recording the continued run's end or next pause gives it back in the same
    transaction, before AgentOS answers; `agentos_continue_release` does when the
    request ends without either."""
    now = timezone.now()
    job_id = _agentos_job_id(run_id)
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    if Job.objects.filter(free, public_id=job_id, owner=user, status=Job.Status.REQUIRES_ACTION).update(
            lease_expires_at=now + timedelta(seconds=settings.AGENTOS_JOB_TIMEOUT), worker=CONTINUING):
        return True
    unfinished = Job.objects.filter(public_id=job_id, owner=user).exclude(status__in=Job.TERMINAL)
    return False if unfinished.exists() else None


def agentos_continue_release(*, run_id: str) -> None:
    """The continue request ended: a claim its run's record did not give back goes (the run failed
    before agno saved it, or the client went away)."""
    Job.objects.filter(public_id=_agentos_job_id(run_id), worker=CONTINUING).update(**_UNCLAIMED)


def _agentos_job_id(run_id: str) -> str:
    return f"job-{run_id}"[:40]


def _agentos_job(*, user: AbstractBaseUser, agent: Agent, session: ChatSession, run_id: str, message: str,
                 now: Any, **fields: Any) -> Job:
    """The message job of a run of agno's AgentOS server (its id from the run's), with its user message."""
    message_id = public_id("msg")
    job = Job.objects.create(
        public_id=_agentos_job_id(run_id), owner=user, kind=Job.Kind.MESSAGE, agent=agent, session=session,
        attempts=1, worker="agentos", input={"message_id": message_id, "source": "agentos", "agno_run_id": run_id},
        enqueued_at=now, started_at=now, **fields)
    ChatMessage.objects.create(public_id=message_id, session=session, role=ChatMessage.Role.USER,
                               content=message, job=job)
    return job


def _agentos_reply(*, job: Job, reply: str, tool_calls: list[dict[str, Any]] | None,
                   metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The AgentOS run's reply as its assistant message; returns the job's `result`."""
    answer = ChatMessage.objects.create(session=job.session, role=ChatMessage.Role.ASSISTANT, content=reply,
                                        tool_calls=tool_calls or [], metrics=metrics or {}, job=job)
    return {"message_id": answer.public_id, "content": reply, "tool_calls": tool_calls or [],
            "metrics": metrics or {}}


def _session_touched(*, session: ChatSession, now: Any, message: str) -> None:
    """The session of a recorded run moves up, takes the run's message as its title if it has
    none, and its cached summary goes (after commit)."""
    ChatSession.objects.filter(pk=session.pk).update(updated_at=now)
    ChatSession.objects.filter(pk=session.pk, title="").update(title=message.strip()[:80])
    session_changed(session_id=session.public_id)


@transaction.atomic
def message_record_paused(*, user: AbstractBaseUser, agent: Agent, session: ChatSession, run_id: str, message: str,
                          run_state: dict[str, Any], actions: list[dict[str, Any]],
                          calls: dict[str, dict[str, Any]] | None = None) -> Job:
    """Record a run of agno's AgentOS server that paused before a tool needing a person,
    as a worker's paused run is stored (apps.jobs.lifecycle.job_pause): its message job
    (the id scheme of `message_record`) is `requires_action` with its user message, the
    stored run (`run_state`) and one action per pending requirement, with its
    `job.action_required` event. So the Opie API shows it, and AgentOS's own continue
    endpoint finds it again (apps.opie.agentos.agno_db).

    Idempotent: agno saves a run more than once, and a save whose pending
    requirements are those of the open pause writes nothing. A run continued in
    AgentOS that pauses again is the job's next pause: the previous one is settled
    with the decisions its tool calls carried (`calls`, see `pause_settle`). A job
    that is no longer `requires_action` (ended, or decided over the Opie API and
    queued for a worker) is left as it is."""
    now = timezone.now()
    job = Job.objects.select_for_update().filter(public_id=_agentos_job_id(run_id)).first()
    if job is None:
        job = _agentos_job(user=user, agent=agent, session=session, run_id=run_id, message=message, now=now,
                           status=Job.Status.REQUIRES_ACTION)
        _session_touched(session=session, now=now, message=message)
    elif job.status != Job.Status.REQUIRES_ACTION:
        return job
    else:
        open_pause = RunPause.objects.filter(job=job, resumed_at__isnull=True).order_by("-number").first()
        if open_pause is not None and (set(open_pause.actions.values_list("requirement_id", flat=True))
                                       == {a["requirement_id"] for a in actions}):
            return job  # the same pause saved again
        pause_settle(job=job, user=user, calls=calls or {}, now=now)
    number = job.pauses + 1
    Job.objects.filter(pk=job.pk).update(pauses=number, **_UNCLAIMED)  # a continue that paused again is over
    job.pauses = number
    pause_record(job=job, number=number, run_state=run_state, actions=actions, now=now)
    job_status_changed(job=job)  # `job.action_required`, with the pending actions in its data
    return job


@transaction.atomic
def message_record_end(*, user: AbstractBaseUser, agent: Agent, session: ChatSession, run_id: str, message: str,
                       reply: str | None, tool_calls: list[dict[str, Any]] | None = None,
                       metrics: dict[str, Any] | None = None, error: str = "",
                       calls: dict[str, dict[str, Any]] | None = None) -> Job:
    """Record the end of a run of agno's AgentOS server. A run that paused first
    (`message_record_paused`) and was continued through AgentOS's continue endpoint
    ends its `requires_action` job here, once: succeeded with its one reply, or failed;
    its open pause is settled with the decisions its tool calls carried (`calls`), and
    the ending has its terminal event like any other (`job_ended_effects`). Any other
    run is `message_record`'s (a new finished job, or nothing when it is recorded)."""
    job = Job.objects.select_for_update().filter(public_id=_agentos_job_id(run_id)).first()
    if job is None or job.status != Job.Status.REQUIRES_ACTION:
        return message_record(user=user, agent=agent, session=session, run_id=run_id, message=message, reply=reply,
                              tool_calls=tool_calls, metrics=metrics, error=error)
    now = timezone.now()
    pause_settle(job=job, user=user, calls=calls or {}, now=now)
    succeeded = reply is not None
    ended: dict[str, Any] = dict(status=Job.Status.SUCCEEDED if succeeded else Job.Status.FAILED, finished_at=now,
                                 error_code="" if succeeded else "model_error", error_message=error[:4000],
                                 **_UNCLAIMED)
    if reply is not None:
        ended["result"] = _agentos_reply(job=job, reply=reply, tool_calls=tool_calls, metrics=metrics)
    Job.objects.filter(pk=job.pk).update(**ended)
    _session_touched(session=session, now=now, message=message)  # titled already, at its pause
    ended_job = job_ended_effects(job_id=job.pk)
    if succeeded:  # last: the user's rollup row stays locked only for the commit (apps.usage)
        usage_record(job=job, metrics=metrics or {}, tool_calls=tool_calls or [])
    return ended_job


@transaction.atomic
def job_retry(*, job: Job) -> Job:
    """Run a failed job again as a new job linked to it (`retry_of`); it belongs to the
    failed job's owner, whoever asks (the owner over the API, staff from the admin).

    The new job has the failed one's kind, agent, session, input, callback URL (so its
    own webhook when it ends) and priority, and a fresh deadline. A message job gets its
    own user message with the failed one's content, accepted now like a new message: it
    is at the end of its session's order (a higher id), and its run's history has the
    question once, because a failed job's messages are no history (apps.chat.selectors);
    the transcript keeps the failed attempt's message with its failed job. An ingest job
    ingests its document again, which is safe: an ingest replaces the document's chunks
    in one transaction (apps.knowledge.ingest), and one retry per failed job means no two
    ingests of it run at once.

    Refused (409) with a stable code: `job_not_failed` (the job did not fail: nothing to
    retry), `job_not_retryable` (its error is not one a retry fixes, apps.jobs.retryable),
    `job_already_retried` (a failed job is retried once, so a repeated request or a second
    click in the admin does not run it twice; retry the retry if that failed too),
    `agent_unavailable` (the agent was deleted, disabled or is no longer visible to the
    owner), `document_deleted` (an ingest whose document is gone); a sync whose owner is
    no longer staff is 403 `staff_only`, as a new sync would be."""
    failed = (Job.objects.select_for_update(of=("self",)).select_related("owner", "agent", "session")
              .get(pk=job.pk))
    if failed.status != Job.Status.FAILED:
        raise DomainError("job_not_failed", f"Only a failed job can be retried; this one is {failed.status}.",
                          status=409)
    if not job_retryable(failed):
        raise DomainError("job_not_retryable", f"A job that failed with {failed.error_code or 'no code'} "
                          "fails the same way again; it cannot be retried.", status=409)
    earlier = failed.retries.order_by("id").values_list("public_id", flat=True).first()
    if earlier is not None:
        raise DomainError("job_already_retried", f"This job was already retried as {earlier}.", status=409)
    if failed.kind == Job.Kind.MESSAGE:
        retry = _message_retry(failed)
    elif failed.kind == Job.Kind.INGEST:
        retry = _ingest_retry(failed)
    else:
        if not getattr(failed.owner, "is_staff", False):
            raise DomainError("staff_only", "Only staff may run an agent sync.", status=403)
        retry = job_create(kind=failed.kind, input=dict(failed.input or {}), **_retrying(failed))
    return retry


def _message_retry(failed: Job) -> Job:
    """The new message job and its user message, as `message_send` writes them."""
    agent, session = failed.agent, failed.session
    try:
        if agent is None or session is None:
            raise NotFound("agent")
        agent = agent_get_visible(user=failed.owner, agent_id=agent.public_id)  # enabled and still shared
    except NotFound:
        raise DomainError("agent_unavailable", "The job's agent was deleted or disabled, or is no longer "
                          "shared with its owner.", status=409) from None
    question = ChatMessage.objects.filter(job=failed, role=ChatMessage.Role.USER).order_by("id").first()
    if question is None:  # not written by Opie's send path; there is no message to send again
        raise DomainError("job_not_retryable", "The job has no user message to send again.", status=409)
    # the session lock of message_send: a concurrent `interrupt` sender cancels this retry or comes after it
    ChatSession.objects.select_for_update().filter(pk=session.pk).first()
    ChatSession.objects.filter(pk=session.pk).update(updated_at=timezone.now())
    session_changed(session_id=session.public_id)
    message_id = public_id("msg")
    retry = job_create(kind=Job.Kind.MESSAGE, agent=agent, session=session, input={"message_id": message_id},
                       **_retrying(failed))
    insert_new(ChatMessage(public_id=message_id, session=session, role=ChatMessage.Role.USER,
                           content=question.content, job=retry))
    return retry


def _ingest_retry(failed: Job) -> Job:
    """The document is ingested again by the new job; it is the document's job from now on."""
    document = Document.objects.defer("data").filter(public_id=(failed.input or {}).get("document_id")).first()
    if document is None:
        raise DomainError("document_deleted", "The job's document was deleted.", status=409)
    retry = job_create(kind=Job.Kind.INGEST, input=dict(failed.input or {}), **_retrying(failed))
    Document.objects.filter(pk=document.pk).update(job=retry)
    # queued again: not `failed` any more (the ingest marks it processing, then ready or failed)
    Document.objects.filter(pk=document.pk, status=Document.Status.FAILED).update(
        status=Document.Status.PENDING, error="")
    return retry


def _retrying(failed: Job) -> dict[str, Any]:
    """What every retry takes from the job it retries, whatever its kind: its owner, callback
    URL (its own webhook) and priority, its link, and a fresh deadline."""
    return {"owner": failed.owner, "callback_url": failed.callback_url, "priority": failed.priority,
            "retry_of": failed, "deadline": job_deadline(None)}
