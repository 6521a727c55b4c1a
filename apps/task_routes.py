"""Every Celery task's name and queue, written once.

Domain code sends to the broker by name (`celery.current_app.send_task(route.name,
queue=route.queue)`) and never imports the Celery app or the workers; the Celery app
routes by these (celery_app.task_routes), beat schedules by them
(config/settings/celery.py), and the workers declare their tasks under them
(`@app.task(name=...)`). The names are the tasks' historical dotted paths: beat's
rows in the database (django-celery-beat) and messages already queued carry them,
so a name never changes, even if its task moves.
"""
from __future__ import annotations

from typing import NamedTuple

QUEUES = ("agents", "sync", "knowledge", "webhooks")


class TaskRoute(NamedTuple):
    name: str
    queue: str


RUN_MESSAGE = TaskRoute("workers.tasks.run_message_task", "agents")
RUN_SYNC = TaskRoute("workers.tasks.run_sync_task", "sync")
PERIODIC_SYNC = TaskRoute("workers.tasks.periodic_sync_task", "sync")
SWEEP_JOBS = TaskRoute("workers.tasks.sweep_jobs_task", "sync")
RUN_INGEST = TaskRoute("workers.tasks.run_ingest_task", "knowledge")
DELIVER_WEBHOOK = TaskRoute("workers.webhook_tasks.deliver_webhook_task", "webhooks")
DISPATCH_DUE_WEBHOOKS = TaskRoute("workers.webhook_tasks.dispatch_due_webhooks_task", "webhooks")
FIRE_SCHEDULES = TaskRoute("workers.tasks.fire_schedules_task", "sync")

TASKS = (RUN_MESSAGE, RUN_SYNC, PERIODIC_SYNC, SWEEP_JOBS, RUN_INGEST, DELIVER_WEBHOOK, DISPATCH_DUE_WEBHOOKS,
         FIRE_SCHEDULES)


def celery_task_routes() -> dict[str, dict[str, str]]:
    """Celery's `task_routes`: each task to its queue."""
    return {task.name: {"queue": task.queue} for task in TASKS}
