"""`manage.py opie_services up|down|status`: the embedded PostgreSQL and Redis under ./var."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from config import embedded


class Command(BaseCommand):
    help = "Start, stop or show the embedded PostgreSQL+pgvector and Redis used when no URLs are set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["up", "down", "status"])

    def handle(self, *args: Any, action: str, **_: Any) -> None:
        if action == "down":
            embedded.stop()
            self.stdout.write("embedded services stopped")
            return
        emb = embedded.ensure_running() if action == "up" else embedded.locate()
        self.stdout.write(f"DATABASE_URL={emb.database_url}\nREDIS_URL={emb.redis_url()}\n"
                          f"CELERY_BROKER_URL={emb.broker_url()}")
