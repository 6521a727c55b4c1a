"""Hand a delivery attempt on: a job's webhook is sent from the process that ended the job.

A worker that has just finished a job sends its webhook from a small pool of
threads of its own, right after the job's transaction commits, rather than
publishing a task for another worker to pick up: a Celery message per job,
its three task events and its consumption cost several times the POST itself.
The pool is apart from the run threads, so a slow receiver never holds a run
slot. Nothing is lost if the process dies first: the delivery row was written
with the job (the outbox), is due, and beat's dispatcher sends it.

Outside a worker (a job cancelled from the API, a redelivery) the attempt goes
to the `webhooks` queue, by task name: the web never POSTs to receivers. So
do retries: beat's dispatcher (`webhooks_due`) sends them there.
"""
from __future__ import annotations

import contextvars
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from celery import current_task
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

DELIVER_TASK = "workers.webhook_tasks.deliver_webhook_task"
_threads: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _threads
    with _lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(max_workers=settings.AGENTOS_WEBHOOK_THREADS,
                                          thread_name_prefix="opie-webhook")
        return _threads


def _forget_pool_after_fork() -> None:
    global _threads
    _threads = None  # its threads stayed in the parent


def _attempt(delivery_id: int) -> None:
    from apps.webhooks.services import webhook_deliver

    try:
        webhook_deliver(delivery_id=delivery_id)
    except Exception:  # the row stays due (or claimed, and is released): the dispatcher tries again
        logger.warning("delivery %s: first attempt failed; the dispatcher will send it", delivery_id, exc_info=True)
    finally:
        connection.close()  # back to the process's pool (DB_POOL_SIZE), or closed


def webhook_dispatch(*, delivery_id: int) -> None:
    """After the commit that created the delivery: attempt it now, here when this is a worker."""
    if current_task is not None and current_task.request.id is not None:
        # the job's log fields (job, agent, session) name the attempt's lines too
        _pool().submit(contextvars.copy_context().run, _attempt, delivery_id)
        return
    from celery_app import app  # as apps.jobs.dispatch sends jobs

    try:
        app.send_task(DELIVER_TASK, args=[delivery_id], queue="webhooks")
    except Exception:  # the broker is down: beat's dispatcher will find the due row
        logger.warning("delivery %s: publish failed; the dispatcher will send it", delivery_id, exc_info=True)


os.register_at_fork(after_in_child=_forget_pool_after_fork)
