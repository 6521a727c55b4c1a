"""Hand a delivery attempt on: a job's webhook is sent from the process that ended the job.

A worker that has just finished a job sends its webhook from a small pool of
threads of its own, right after the job's transaction commits, rather than
publishing a task for another worker to pick up: a Celery message per job,
its three task events and its consumption cost several times the POST itself.
The pool is apart from the run threads, so a slow receiver never holds a run
slot. Nothing is lost if the process dies first: the delivery row was written
with the job (the outbox), is due, and beat's dispatcher sends it.

Outside a worker (a job cancelled from the API, a redelivery) the attempt goes
to the `webhooks` queue, by task name through Celery's current app: the web never
POSTs to receivers. So do retries: beat's dispatcher (`webhooks_due`) sends them there.

The attempt itself is apps.webhooks.services.webhook_deliver, which services hands
in (`deliver`): services writes the deliveries and calls this module, so this one
does not import it back.
"""
from __future__ import annotations

import contextvars
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from celery import current_app, current_task
from django.conf import settings
from django.db import connection

from apps.task_routes import DELIVER_WEBHOOK

logger = logging.getLogger(__name__)

Deliver = Callable[..., object]  # webhook_deliver(*, delivery_id) -> its outcome
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


def _attempt(deliver: Deliver, delivery_id: int) -> None:
    try:
        deliver(delivery_id=delivery_id)
    except Exception:  # the row stays due (or claimed, and is released): the dispatcher tries again
        logger.warning("delivery %s: first attempt failed; the dispatcher will send it", delivery_id, exc_info=True)
    finally:
        connection.close()  # back to the process's pool (DB_POOL_SIZE), or closed


def webhook_dispatch(*, delivery_id: int, deliver: Deliver) -> None:
    """After the commit that created the delivery: attempt it now (`deliver`), here when this is a worker."""
    if current_task and current_task.request.id is not None:  # a proxy: falsy outside a task
        # the job's log fields (job, agent, session) name the attempt's lines too
        _pool().submit(contextvars.copy_context().run, _attempt, deliver, delivery_id)
        return
    try:  # as apps.jobs.dispatch sends jobs
        current_app.send_task(DELIVER_WEBHOOK.name, args=[delivery_id], queue=DELIVER_WEBHOOK.queue)
    except Exception:  # the broker is down: beat's dispatcher will find the due row
        logger.warning("delivery %s: publish failed; the dispatcher will send it", delivery_id, exc_info=True)


os.register_at_fork(after_in_child=_forget_pool_after_fork)
