"""Which agents a user may see and use (RBAC lives here only)."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from apps.agents.models import Agent
from apps.common import NotFound


def agent_list_visible(*, user: AbstractBaseUser) -> QuerySet[Agent]:
    """Enabled agents the user owns, that are shared with them, or that are public."""
    grant = (Q(owner=user) | Q(visibility=Agent.Visibility.PUBLIC)
             | Q(visibility=Agent.Visibility.SHARED, shared_with=user))
    agents = Agent.objects.filter(grant, enabled=True)
    if not settings.AGENTOS_INCLUDE_VAULT_AGENTS:  # vault agents exist only while the setting is on
        agents = agents.exclude(is_vault=True)
    return agents.distinct()


def agent_get_visible(*, user: AbstractBaseUser, agent_id: str) -> Agent:
    agent = agent_list_visible(user=user).filter(public_id=agent_id).first()
    if agent is None:
        raise NotFound("agent")
    return agent


def agent_get_owned(*, user: AbstractBaseUser, agent_id: str) -> Agent:
    """Only the owner may edit or delete; to anyone else the agent does not exist."""
    agent = Agent.objects.filter(owner=user, public_id=agent_id).first()
    if agent is None:
        raise NotFound("agent")
    return agent
