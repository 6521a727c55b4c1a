"""The AgentOS server as uvicorn's app factory, for `manage.py agentos_start --reload`.

uvicorn's reloader imports `apps.opie.agentos.asgi:create_app` in a process of its
own, where Django is not set up yet: this sets it up, then builds the server.
"""
from __future__ import annotations

from typing import Any

import django


def create_app() -> Any:
    django.setup()
    from apps.opie.agentos.server import create_app as server_app  # imports models: only once Django is set up

    return server_app()
