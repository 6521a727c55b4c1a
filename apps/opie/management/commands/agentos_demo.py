"""`manage.py agentos_demo`: the demo user, agent and token that `make run` prints."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from apps.accounts.services import api_token_authenticate, api_token_create
from apps.agents.models import Agent
from apps.agents.services import agent_create

DEMO_USER = "demo"
DEMO_AGENT = "Demo assistant"


class Command(BaseCommand):
    help = "Create (once) a demo user, agent and API token, and print how to use them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--flower-port", default=os.environ.get("FLOWER_PORT", "5555"))

    def handle(self, *args: Any, port: str, flower_port: str, **_: Any) -> None:
        users = get_user_model()
        user = users.objects.filter(username=DEMO_USER).first()
        if user is None:
            user = users.objects.create_user(DEMO_USER, password=DEMO_USER, is_staff=True, is_superuser=True)
        agent = Agent.objects.filter(owner=user, name=DEMO_AGENT).first()
        if agent is None:
            agent = agent_create(owner=user, name=DEMO_AGENT, visibility=Agent.Visibility.PUBLIC,
                                 description="Answers offline with the built-in local model.",
                                 instructions="You are a helpful assistant.",
                                 tools=["calculator", "current_time"])
        token = self._token(user)
        flower_auth = self._flower_auth()
        base = f"http://127.0.0.1:{port}"
        self.stdout.write(f"""
Opie is starting.
  web        {base}/agentos/   (log in as {DEMO_USER} / {DEMO_USER}; admin at {base}/admin/)
  API docs   {base}/api/v1/agentos/docs
  Flower     http://127.0.0.1:{flower_port}/   (basic auth {flower_auth})
  demo agent {agent.public_id}
  API token  {token}

Try it:
  export OPIE_TOKEN={token}
  curl -s -H "Authorization: Bearer $OPIE_TOKEN" {base}/api/v1/agentos/agents/
  curl -s -H "Authorization: Bearer $OPIE_TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"agent_id": "{agent.public_id}", "message": "Hello!"}}' {base}/api/v1/agentos/send-message/
  curl -s -H "Authorization: Bearer $OPIE_TOKEN" {base}/api/v1/agentos/jobs/<job_id>/
""")

    def _flower_auth(self) -> str:
        """Flower is never open: `make run` passes these credentials to it."""
        path = Path(settings.BASE_DIR) / "var" / "flower-auth"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"demo:{secrets.token_urlsafe(12)}")
            path.chmod(0o600)
        return path.read_text().strip()

    def _token(self, user: Any) -> str:
        """Reuse the demo token across restarts; it lives in ./var, readable by you only."""
        path = Path(settings.BASE_DIR) / "var" / "demo-token"
        if path.exists():
            raw = path.read_text().strip()
            if api_token_authenticate(raw=raw) is not None:
                return raw
        _, raw = api_token_create(user=user, name="demo (make run)")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(raw)
        path.chmod(0o600)
        return raw
