"""Liveness and readiness for load balancers and compose health checks."""
from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.db.utils import Error as DatabaseError
from django.http import HttpRequest, JsonResponse

from apps.opie.checks import readiness, summary


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
