"""Worker process wiring: agno quiet and offline, nothing shared across a fork."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

from agno.utils.log import configure_agno_logging as configure
from celery.apps import worker as celery_worker
from celery.signals import celeryd_after_setup, task_postrun, worker_init, worker_process_init, worker_ready
from django.conf import settings
from django.db import DatabaseError, connection, connections
from django.db.backends.signals import connection_created
from django.dispatch import receiver

from apps.agents.cancellation import install as install_cancellation
from apps.agents.providers import reset_http_clients
from apps.tracing import configure_tracing
from apps.webhooks.client import webhook_http_client
from config.logging import JsonFormatter
from workers.pool import get_pool, prewarm, reset_pool
from workers.priority import lower_own_group, share_priority

os.environ.setdefault("AGNO_TELEMETRY", "false")


def configure_agno_logging() -> None:
    """agno's loggers print to stdout and reset their level on every run; route
    them through a logger of ours that the settings' LOGGING controls."""
    ours = logging.getLogger("opie.agno")
    configure(custom_default_logger=ours, custom_agent_logger=ours, custom_team_logger=ours,
              custom_workflow_logger=ours)


logger = logging.getLogger(__name__)


def _prewarm() -> None:
    """The agents most recently used, and the webhook client: its TLS context and the HTTP
    modules it loads cost tens of milliseconds under the GIL, paid here rather than by the
    first job that ends with a webhook, while every other run thread waits."""
    try:
        built = prewarm(get_pool(), settings.AGENTOS_POOL_PREWARM)
        logger.info("pool prewarmed with %d agents", built)
    except Exception:  # a cold pool still works: it builds on first use
        logger.warning("pool prewarm failed", exc_info=True)
    finally:
        connection.close()
    webhook_http_client(timeout=float(settings.AGENTOS_WEBHOOK_TIMEOUT))


def _say_as_json(msg: str, f: Any = sys.__stderr__) -> None:
    """Celery's shutdown notices, written from signal handlers outside logging, as JSON lines."""
    record = logging.LogRecord("celery.apps.worker", logging.INFO, __file__, 0, msg.strip(), None, None)
    try:
        os.write(f.fileno(), (JsonFormatter().format(record) + "\n").encode())
    except (OSError, ValueError):  # best effort, like Celery's own: never abort a shutdown
        pass


@celeryd_after_setup.connect
def _json_only_output(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """With LOG_FORMAT=json every line a worker writes is JSON: its start-up banner and
    shutdown notices (printed straight to the terminal) become JSON lines as well."""
    if settings.LOG_FORMAT != "json" or instance is None:
        return
    celery_worker.safe_say = _say_as_json
    if not getattr(instance, "quiet", True):
        instance.quiet = True
        logger.info("worker %s starting\n%s", sender, instance.startup_info(artlines=False))


@worker_init.connect
def _tracing(**_: Any) -> None:
    """Traces, when OTEL_EXPORTER_OTLP_ENDPOINT asks for them (apps.tracing): set up before
    the pool starts; a prefork child's exporter thread restarts after the fork (the SDK's own)."""
    configure_tracing("opie-worker")


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """Prefork child: nothing built in the parent may cross the fork."""
    reset_pool()
    reset_http_clients()
    _prewarm()


@receiver(connection_created)
def _backend_at_our_priority(sender: Any = None, connection: Any = None, **_: Any) -> None:
    share_priority(connection)


@task_postrun.connect
def _drop_broken_connections(**_: Any) -> None:
    """Each pool thread keeps its own database connection across tasks (Celery's
    Django fixup reuses them, CELERY_DB_REUSE_MAX) and nothing else closes one that
    PostgreSQL dropped: after a database restart such a thread failed every task it
    took, sweeps included, for as long as the worker lived (tests/test_chaos.py
    scenario 3). After a task whose queries failed, close this thread's connection
    unless it still works, as Django does at the end of a request; the next task
    connects again. Costs nothing on the happy path (no round trip)."""
    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred and conn.connection is not None and not conn.in_atomic_block:
            try:
                usable = conn.is_usable()
            except DatabaseError:
                usable = False
            if usable:
                conn.errors_occurred = False
            else:
                try:
                    conn.close()
                except DatabaseError:
                    conn.connection = None


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    """Threads and solo pools run tasks in this very process: warm it here."""
    pool = getattr(sender, "pool", None)
    if type(pool).__module__ in ("celery.concurrency.thread", "celery.concurrency.solo"):
        _prewarm()


configure_agno_logging()
install_cancellation()  # a run's model waits for its cancel on an event, never by polling
lower_own_group()  # a niced worker's session yields the CPU to the web's (workers/priority.py)
