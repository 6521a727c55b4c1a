"""agno's own AgentOS over the bench user's agents, for `uvicorn bench.agentos_app:app`."""
from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402

from apps.opie.agentos.config import agent_os_config  # noqa: E402

app = agent_os_config.initialize_agent_os(get_user_model().objects.get(username="bench")).get_app()
