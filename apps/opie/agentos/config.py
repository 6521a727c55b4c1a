"""The one place that turns a Django `Agent` into an agno `Agent`.

What is expensive or stateful to make (the model client with its HTTP pool,
the tool list) is built once per (agent, version) as `AgentParts`; the agno
`Agent` itself costs ~15 µs and keeps per-run state that races across
threads, so every run gets a fresh one over shared parts.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from apps.agents.models import Agent as DjangoAgent
from apps.agents.providers import build_model
from apps.agents.tools import tool_functions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentParts:
    key: tuple[int, int]
    public_id: str
    name: str
    description: str
    instructions: str
    model: Any
    tools: list[Callable[..., str]] = field(default_factory=list)
    build_ms: float = 0.0


class AgentOSConfig:
    def build_parts(self, django_agent: DjangoAgent) -> AgentParts:
        started = time.perf_counter()
        model = build_model(django_agent.model_provider, django_agent.model_id, django_agent.model_options or {})
        return AgentParts(
            key=(django_agent.pk, django_agent.version), public_id=django_agent.public_id,
            name=django_agent.name, description=django_agent.description,
            instructions=django_agent.instructions, model=model, tools=tool_functions(django_agent.tools or []),
            build_ms=(time.perf_counter() - started) * 1000)

    def agent_from_parts(self, parts: AgentParts, *, user: AbstractBaseUser | None = None,
                         session_id: str | None = None, tool_hooks: list[Callable[..., Any]] | None = None) -> Any:
        from agno.agent import Agent

        return Agent(
            id=parts.public_id, name=parts.name, description=parts.description or None,
            instructions=parts.instructions or None, model=parts.model, tools=list(parts.tools),
            db=None,  # Django owns history: it is passed in as the run input
            session_id=session_id, user_id=str(user.pk) if user is not None else None,
            telemetry=False, markdown=False, tool_hooks=tool_hooks,
            # agno's own debug lines (prompts, tool calls, metrics) go to the `opie.agno` logger
            debug_mode=settings.AGENTOS_DEBUG)

    def create_agent_from_django(self, django_agent: DjangoAgent, user: AbstractBaseUser | None = None,
                                 session_id: str | None = None) -> Any:
        """The seed's entry point: a ready agno Agent for one Django agent."""
        return self.agent_from_parts(self.build_parts(django_agent), user=user, session_id=session_id)

    def initialize_agent_os(self, user: AbstractBaseUser | None = None) -> Any:
        """agno's own AgentOS over the Django agents (all enabled ones, or those `user` may use)."""
        from agno.os import AgentOS

        from apps.agents.selectors import agent_list_visible

        agents = (agent_list_visible(user=user) if user is not None
                  else DjangoAgent.objects.filter(enabled=True))
        built = [self.create_agent_from_django(agent, user=user) for agent in agents]
        return AgentOS(id="opie", name="Opie AgentOS", agents=built, telemetry=False)


agent_os_config = AgentOSConfig()
