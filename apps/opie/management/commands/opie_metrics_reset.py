"""`manage.py opie_metrics_reset`: empty the metrics directory (OPIE_METRICS_DIR) as a
deployment starts, before its web and worker processes do (`make run`, Compose's `migrate`).

Each process writes its metrics there (apps.metrics) and a process that ended leaves its
counters behind, so they add up across restarts of one process; a new deployment starts
from zero. Never run it while the processes run: what they write afterwards is lost.
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps import metrics


class Command(BaseCommand):
    help = "Empty OPIE_METRICS_DIR before a deployment's processes start (never while they run)."

    def handle(self, *args: Any, **options: Any) -> None:
        removed = metrics.reset()
        self.stdout.write(f"metrics: {removed} file(s) removed from {metrics.METRICS_DIR}")
