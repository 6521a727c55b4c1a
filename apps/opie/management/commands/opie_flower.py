"""`manage.py opie_flower`: Flower, never without authentication.

Flower alone starts open to anyone when no auth option is given, and even
with basic auth it serves `/metrics` (task names, worker hosts) to anyone
(mher/flower#1342). This command refuses to start without FLOWER_BASIC_AUTH
and puts `/metrics` behind the same credentials (Prometheus scrapes with
`basic_auth`). `/healthcheck` stays open: it only says "OK".

The credentials reach Flower through its own FLOWER_BASIC_AUTH variable, so
they never show in the process list; any other Flower option can be set the
same way (FLOWER_URL_PREFIX, FLOWER_PERSISTENT, ...).
"""
from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from flower.views.monitor import Metrics
from tornado.web import authenticated

from apps.metrics import process_local
from celery_app import app
from workers.priority import lower_own_group


def basic_auth_credentials(raw: str) -> list[str]:
    """`user:password[,user2:password2]` as Flower reads it; refuses anything else."""
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    if not entries:
        raise CommandError("FLOWER_BASIC_AUTH is not set: Flower never runs without authentication. "
                           "Set FLOWER_BASIC_AUTH=user:password (make run generates one in var/flower-auth).")
    for entry in entries:
        user, _, password = entry.partition(":")
        if not user or not password:
            raise CommandError("FLOWER_BASIC_AUTH must be user:password pairs separated by commas "
                               "(a password cannot contain a comma).")
    return entries


def metrics_behind_auth() -> None:
    """Flower 2 serves /metrics without asking for credentials; make it ask like every other page."""
    if not hasattr(Metrics.get, "__wrapped__"):
        Metrics.get = authenticated(Metrics.get)


class Command(BaseCommand):
    help = "Run Flower with basic auth from FLOWER_BASIC_AUTH (also on /metrics); refuse to start without it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--address", default=settings.FLOWER_ADDRESS,
                            help="interface to listen on (FLOWER_ADDRESS, default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=settings.FLOWER_PORT,
                            help="port (FLOWER_PORT, default 5555)")

    def handle(self, *args: Any, address: str, port: int, **_: Any) -> None:
        os.environ["FLOWER_BASIC_AUTH"] = ",".join(basic_auth_credentials(settings.FLOWER_BASIC_AUTH))
        metrics_behind_auth()
        process_local()  # Flower's own metrics stay on Flower's /metrics, out of the web's
        lower_own_group()  # started niced (the Procfile): monitoring yields the CPU to the web
        code = app.start(["flower", f"--address={address}", f"--port={port}"])
        if code:
            raise CommandError(f"Flower exited with status {code}")
