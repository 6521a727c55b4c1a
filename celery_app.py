"""The Celery application: queues, routing and worker wiring.

Queues: `agents` (message runs, I/O bound, threads pool), `sync` (agent sync
and the sweeper), `knowledge` (ingestion, CPU bound, prefork) and `webhooks`
(outbound deliveries). Each task's name and queue are in apps/task_routes.py.

`config` imports this module (config/__init__.py, as cookiecutter-django does),
so in every Django process this app is Celery's current one: domain code sends
by task name through `celery.current_app` and never imports this module.
"""
import os
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, setup_logging
from django.conf import settings
from kombu import Exchange, Queue

from apps.task_routes import QUEUES, celery_task_routes
from workers.broker import patch_redis_channel

# also registers the pool's remote-control commands here: `celery -A celery_app inspect
# opie_pool_stats` refuses a command its own process does not know
from workers.control import PoolStatsStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("AGNO_TELEMETRY", "false")
patch_redis_channel()  # every process that publishes (the web too), not only workers (workers.broker)

app = Celery("opie", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
# one exchange and routing key per queue: a message lands in exactly one queue
app.conf.task_queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]
app.conf.task_routes = celery_task_routes()
app.conf.include = ["workers.tasks", "workers.webhook_tasks", "workers.signals", "workers.control"]
app.steps["worker"].add(PoolStatsStep)


def _django_logging() -> None:
    # circular: config/__init__.py imports this module, so a module-level import of
    # config here would run that before `app` exists
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

