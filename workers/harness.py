"""Every job runs the same way, whatever its kind: claim it, skip it when it is
not claimable now, log every line with its ids, run the kind's body, end it.

A kind (workers.execution for messages, workers.sync, workers.knowledge) plugs
in only its body. A body either returns the job's result, and the harness
finishes the job with it, or ends the job itself and returns what happened (a
message job's reply is written with its ending); it raises `JobFailed` for a
failure it knows is final. Every ending is fenced on the claim's lease
(apps.jobs.lifecycle), so an attempt that lost the job writes nothing: its
outcome is `dropped`.

The claimed job is tracked by the worker's lease watcher (workers.watcher) from
the claim until its ending is written, and an ending that cannot get a
database connection yet (every pooled one busy, PostgreSQL restarting) is
tried again rather than thrown away with the finished work.

Any other exception is left to Celery and the sweeper, as a lost worker is:
the task fails, the job stays `running` until its lease runs out, and the
sweeper hands it to another attempt (at most AGENTOS_MAX_ATTEMPTS in all).
"""
from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable

from celery import current_task

from apps.jobs.lifecycle import job_claim, job_fail, job_succeed
from apps.jobs.models import Job
from apps.tracing import job_attributes, job_trace, record_span, trace_id, tracer
from config.logging import log_context
from workers.watcher import until_written, watcher

# returns the job's result (the harness finishes the job) or, when it ended the job itself, what happened
Body = Callable[[Job], "dict[str, Any] | str"]


class JobFailed(Exception):
    """Raised by a body: the job ends `failed` with this code and message, and is not retried."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def worker_name() -> str:
    """`<celery node>:<thread>` (e.g. `agents@host:4242`), so a job names the worker process that ran it."""
    node = getattr(current_task.request, "hostname", None) if current_task else None
    return f"{node or socket.gethostname()}:{threading.get_native_id()}"


def job_run(job_id: int, *, kind: str, body: Body, logger: logging.Logger,
            log_ids: Callable[[Job], dict[str, Any]] | None = None) -> str:
    """Run one attempt of job `job_id` with `body`. Returns what happened, for logs:
    skipped | succeeded | failed | cancelled | paused | dropped. `log_ids`: ids the job's
    lines carry besides its own, its agent's and its session's; `logger`: the
    kind's, so each kind's lines keep their logger's name."""
    with tracer.start_as_current_span("job.claim") as claim:
        job = job_claim(job_id=job_id, worker=worker_name())
        if job is not None:
            claim.set_attributes(job_attributes(job))
    if job is None:
        logger.info("%s job %s skipped: not claimable now", kind, job_id)
        return "skipped"
    # every line logged from here to the end of the job carries its public ids and its trace's,
    # and every span of its run is in its trace (apps.tracing)
    with log_context(job_id=job.public_id, agent_id=job.agent.public_id if job.agent else None,
                     session_id=job.session.public_id if job.session else None, trace_id=trace_id(job.trace_context),
                     **(log_ids(job) if log_ids else {})), job_trace(job):
        record_span("job.queue_wait", traceparent=job.trace_context, start=job.created_at,
                    end=job.started_at or job.created_at)
        logger.info("%s job started (attempt %d)", kind, job.attempts)
        outcome = _run_claimed(job, body)
        logger.info("%s job %s", kind, outcome)
        return outcome


def _run_claimed(job: Job, body: Body) -> str:
    # the lease is renewed from the claim until the ending is written, whatever the kind
    with watcher.track(job):
        try:
            done = body(job)
        except JobFailed as failure:
            code, message = failure.code, failure.message
            return until_written(lambda: "failed" if job_fail(job=job, code=code, message=message) else "dropped")
        if isinstance(done, str):  # the body ended the job itself
            return done
        return until_written(lambda: "succeeded" if job_succeed(job=job, result=done) else "dropped")
