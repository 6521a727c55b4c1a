from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from apps.agents.models import Agent
from apps.chat.models import ChatSession
from apps.common import DomainError

MAX_TITLE = 200


def session_create(*, user: AbstractBaseUser, agent: Agent, title: str = "",
                   session_id: str | None = None) -> ChatSession:
    """`session_id` keeps an id chosen elsewhere (AgentOS clients pick their own)."""
    if len(title) > MAX_TITLE:
        raise DomainError("invalid_input", f"title must be at most {MAX_TITLE} characters.")
    if session_id is not None:
        return ChatSession.objects.create(public_id=session_id[:40], owner=user, agent=agent, title=title.strip())
    return ChatSession.objects.create(owner=user, agent=agent, title=title.strip())
