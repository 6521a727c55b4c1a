"""The Celery application: queues, routing and worker wiring.

Queues: `agents` (message runs, I/O bound, threads pool), `sync` (agent sync
and the sweeper), `knowledge` (ingestion, CPU bound, prefork) and `webhooks`
(outbound deliveries).
"""
import os
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, setup_logging
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


def _django_logging() -> None:
    from django.conf import settings

    from config.logging import configure

    configure(settings.LOGGING)


@celeryd_init.connect
def _log_from_the_start(**_: Any) -> None:
    """A worker warns (e.g. about running as root) before Celery sets up logging."""
    _django_logging()


@setup_logging.connect
def _use_django_logging(**_: Any) -> None:
    """Workers and beat log through the settings' LOGGING (LOG_LEVEL, LOG_FORMAT), not
    Celery's own format and `--loglevel`: the same lines, plain or JSON, as the web."""
    _django_logging()
    if app.conf.worker_redirect_stdouts:  # what Celery does when it configures logging itself
        app.log.redirect_stdouts(app.conf.worker_redirect_stdouts_level)


from workers.control import PoolStatsStep  # noqa: E402  (needs `app` to exist)

app.steps["worker"].add(PoolStatsStep)
