"""The Celery application: queues, routing and worker wiring.

Queues: `agents` (message runs, I/O bound, threads pool), `sync` (agent sync
and the sweeper), `knowledge` (ingestion, CPU bound, prefork) and `webhooks`
(outbound deliveries).
"""
import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("AGNO_TELEMETRY", "false")

app = Celery("opie", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
QUEUES = ("agents", "sync", "knowledge", "webhooks")
# one exchange and routing key per queue: a message lands in exactly one queue
app.conf.task_queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]
app.conf.task_routes = {
    "workers.tasks.run_message_task": {"queue": "agents"},
    "workers.tasks.sweep_jobs_task": {"queue": "sync"},
    "workers.tasks.run_sync_task": {"queue": "sync"},
    "workers.tasks.periodic_sync_task": {"queue": "sync"},
    "workers.tasks.run_ingest_task": {"queue": "knowledge"},
    "workers.webhook_tasks.*": {"queue": "webhooks"},
}
app.conf.include = ["workers.tasks", "workers.webhook_tasks", "workers.signals", "workers.control"]

from workers.control import PoolStatsStep  # noqa: E402  (needs `app` to exist)

app.steps["worker"].add(PoolStatsStep)
