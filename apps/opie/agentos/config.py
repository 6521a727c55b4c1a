"""The seed's entry point, `agent_os_config`: Django agents as agno agents.

A thin facade. The builder itself lives in the agents app (apps.agents.builder:
`AgentParts`, `build_parts`, `agent_from_parts`), where the workers' pool, the
agent sync and the AgentOS server use it without importing this top-level app.
"""
from __future__ import annotations

from typing import Any, Callable

from django.contrib.auth.models import AbstractBaseUser

from apps.agents import builder
from apps.agents.builder import AgentParts
from apps.agents.models import Agent as DjangoAgent

__all__ = ["AgentOSConfig", "AgentParts", "agent_os_config"]


class AgentOSConfig:
    def config_dict(self, django_agent: DjangoAgent) -> dict[str, Any]:
        """The agent's resolved configuration (apps.agents.builder.config_dict)."""
        return builder.config_dict(django_agent)

    def build_parts(self, django_agent: DjangoAgent, *, pooled: bool = True) -> AgentParts:
        """`pooled=False` for async runs (the AgentOS server): agno makes the model's async client."""
        return builder.build_parts(django_agent, pooled=pooled)

    def agent_from_parts(self, parts: AgentParts, *, user: AbstractBaseUser | None = None,
                         session_id: str | None = None, tool_hooks: list[Callable[..., Any]] | None = None,
                         db: Any = None, context: str | None = None) -> Any:
        """A fresh agno Agent over warm parts (apps.agents.builder.agent_from_parts)."""
        return builder.agent_from_parts(parts, user=user, session_id=session_id, tool_hooks=tool_hooks, db=db,
                                        context=context)

    def create_agent_from_django(self, django_agent: DjangoAgent, user: AbstractBaseUser | None = None,
                                 session_id: str | None = None) -> Any:
        """The seed's entry point: a ready agno Agent for one Django agent."""
        return builder.agent_from_parts(builder.build_parts(django_agent), user=user, session_id=session_id)

    def initialize_agent_os(self, user: AbstractBaseUser | None = None) -> Any:
        """agno's own AgentOS over the Django agents (all enabled ones, or those
        `user` may use), storing sessions in the Django chat tables. Serve it with
        `manage.py agentos_start`, which also puts Opie's token auth in front."""
        from apps.opie.agentos.server import build_agent_os  # import-time cost: agno's AgentOS (FastAPI), ~1 s

        return build_agent_os(user.pk if user is not None else None)[0]


agent_os_config = AgentOSConfig()
