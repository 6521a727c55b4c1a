"""`manage.py agentos_start [--host H] [--port P] [--user-id N] [--reload]`:
serve the Django agents through agno's own AgentOS (FastAPI on uvicorn).

Sessions live in the Django chat tables (one transcript for both servers) and
every route but /health needs an Opie API token; see apps.opie.agentos.server.
Binds 127.0.0.1 unless told otherwise (AGENTOS_DEFAULT_HOST / --host).
"""
from __future__ import annotations

import ipaddress
import os
from typing import Any

import uvicorn
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.opie.agentos.server import create_app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Command(BaseCommand):
    help = "Serve the Django agents through agno's AgentOS (FastAPI), behind Opie's API tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=None, help="address to bind (default AGENTOS_DEFAULT_HOST, 127.0.0.1)")
        parser.add_argument("--port", type=int, default=None, help="port (default AGENTOS_DEFAULT_PORT, 7777)")
        parser.add_argument("--user-id", type=int, default=None,
                            help="serve only the agents this user may use (default: all enabled agents)")
        parser.add_argument("--reload", action="store_true", default=None,
                            help="restart on code changes, for development (default AGENTOS_AUTO_RELOAD)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.AGENTOS_ENABLED:
            raise CommandError("AgentOS is disabled (AGENTOS_ENABLED=False); nothing to serve.")
        host = options["host"] or settings.AGENTOS_DEFAULT_HOST
        port = options["port"] or settings.AGENTOS_DEFAULT_PORT
        reload = settings.AGENTOS_AUTO_RELOAD if options["reload"] is None else options["reload"]
        user_id = options["user_id"]
        if user_id is not None and not get_user_model().objects.filter(pk=user_id, is_active=True).exists():
            raise CommandError(f"no active user with id {user_id}")
        if not _is_loopback(host):
            self.stderr.write(self.style.WARNING(
                f"Binding {host}: the AgentOS server is reachable from other machines (token auth still applies)."))
        if user_id is not None:
            os.environ["OPIE_AGENTOS_USER_ID"] = str(user_id)
        scope = f"agents user {user_id} may use" if user_id is not None else "all enabled agents"
        reloading = " with reload" if reload else ""
        self.stdout.write(f"AgentOS serving {scope} on http://{host}:{port} "
                          f"(Authorization: Bearer <Opie API token>; /health is open){reloading}")
        self.stdout.flush()
        log_level = "debug" if settings.AGENTOS_DEBUG else "info"
        if reload:
            uvicorn.run("apps.opie.agentos.asgi:create_app", factory=True, host=host, port=port, reload=True,
                        reload_dirs=[str(settings.BASE_DIR / "apps")], log_level=log_level)
            return
        uvicorn.run(create_app(user_id), host=host, port=port, log_level=log_level, access_log=settings.AGENTOS_DEBUG)
