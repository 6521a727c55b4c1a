"""Readiness checks shared by GET /readyz and `manage.py agentos_test`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import redis
from django.conf import settings
from django.db import connection

from apps.task_routes import QUEUES
from celery_app import app


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    ms: float


def timed(name: str, probe: Callable[[], str]) -> Check:
    """Run one probe; it returns a detail string or raises with the reason."""
    started = time.perf_counter()
    try:
        detail, ok = probe(), True
    except Exception as exc:  # a check reports, it never crashes the caller
        detail, ok = f"{exc.__class__.__name__}: {exc}", False
    return Check(name, ok, detail, round((time.perf_counter() - started) * 1000, 1))


def database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(" on ")[0]
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        vector = cursor.fetchone()
    return f"{version}, pgvector {vector[0]}" if vector else f"{version}, pgvector not installed"


def broker() -> str:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    client.ping()
    return "redis answers PING"


def workers_by_queue(timeout: float = 1.0) -> dict[str, list[str]]:
    """Which live workers consume each queue."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    consumers: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues:
            consumers.setdefault(queue["name"], []).append(worker)
    return consumers


def queues_served(required: tuple[str, ...] = QUEUES) -> str:
    consumers = workers_by_queue()
    missing = [q for q in required if q not in consumers]
    if missing:
        raise RuntimeError(f"no worker consumes {', '.join(missing)}")
    return "; ".join(f"{q}: {len(consumers[q])} worker(s)" for q in required)


def readiness(required: tuple[str, ...]) -> list[Check]:
    return [timed("database", database), timed("broker", broker),
            timed("workers", lambda: queues_served(required))]


def summary(checks: list[Check]) -> dict[str, Any]:
    return {"ready": all(c.ok for c in checks),
            "checks": {c.name: {"ok": c.ok, "detail": c.detail, "ms": c.ms} for c in checks}}
