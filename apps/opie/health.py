"""Liveness and readiness for load balancers and compose health checks; metrics for Prometheus."""
from __future__ import annotations

import hmac
import logging
from typing import Iterator

from django.conf import settings
from django.db import connection
from django.db.utils import Error as DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from apps import metrics as app_metrics
from apps.jobs.models import Job
from apps.jobs.selectors import queue_snapshot
from apps.opie.checks import readiness, summary
from apps.webhooks.selectors import oldest_undelivered_webhook

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers and reaches its database."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"status": "unavailable", "database": False}, status=503)
    return JsonResponse({"status": "ok", "database": True})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: database, broker, and a live worker on every queue the deployment
    runs (AGENTOS_READY_QUEUES)."""
    result = summary(readiness(tuple(settings.AGENTOS_READY_QUEUES)))
    return JsonResponse(result, status=200 if result["ready"] else 503)


# `/metrics` is answered for these clients alone when OPIE_METRICS_TOKEN is unset
_LOOPBACK = ("127.", "::1", "::ffff:127.")


def _metrics_allowed(request: HttpRequest) -> bool:
    """With OPIE_METRICS_TOKEN: its bearer token, compared in constant time. Without: loopback
    clients only (behind a proxy on the same host that is the proxy too: set a token there)."""
    expected = settings.OPIE_METRICS_TOKEN
    if expected:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())
    return str(request.META.get("REMOTE_ADDR", "")).startswith(_LOOPBACK)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus: every process's metrics of this deployment (apps.metrics), and what
    PostgreSQL says now about the queue and the webhooks (QueueCollector)."""
    if not _metrics_allowed(request):
        response = HttpResponse("metrics need their bearer token\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    app_metrics.prune_dead()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(app_metrics.METRICS_DIR))
    registry.register(QueueCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class QueueCollector(Collector):
    """Read at scrape time from PostgreSQL, the truth: jobs waiting and running by kind, the
    oldest queued job's age, and the oldest undelivered webhook's. Two indexed statements."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queued = GaugeMetricFamily("opie_jobs_queued", "Jobs queued now, by kind.", labels=["kind"])
        running = GaugeMetricFamily("opie_jobs_running", "Jobs running now, by kind.", labels=["kind"])
        oldest = GaugeMetricFamily("opie_job_oldest_queued_seconds", "Age of the oldest queued job, by kind "
                                   "(0: none queued).", labels=["kind"])
        webhook = GaugeMetricFamily("opie_webhook_oldest_undelivered_seconds",
                                    "Age of the oldest webhook delivery not yet delivered nor failed (0: none).")
        try:
            jobs = queue_snapshot()
            pending = oldest_undelivered_webhook()
        except DatabaseError as exc:  # the rest of the scrape still answers; the gaps show the outage
            logger.warning("metrics: PostgreSQL unreachable (%s)", exc)
            return
        now = timezone.now()
        for kind in Job.Kind.values:
            counts = jobs.get(kind, {})
            queued.add_metric([kind], counts.get(Job.Status.QUEUED, 0))
            running.add_metric([kind], counts.get(Job.Status.RUNNING, 0))
            first = counts.get("oldest")
            oldest.add_metric([kind], max((now - first).total_seconds(), 0.0) if first else 0.0)
        webhook.add_metric([], max((now - pending).total_seconds(), 0.0) if pending else 0.0)
        yield from (queued, running, oldest, webhook)
