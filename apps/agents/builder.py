"""The one place that turns a Django `Agent` into an agno `Agent`.

What is expensive or stateful to make (the model client with its HTTP pool,
the tool list) is built once per (agent, version) as `AgentParts`; the agno
`Agent` itself costs ~15 µs and keeps per-run state that races across
threads, so every run gets a fresh one over shared parts (`agent_from_parts`).
Workers keep the parts warm (workers/pool.py); the AgentOS server builds them
at start; the seed's `apps.opie.agentos.config.agent_os_config` calls these.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from apps import metrics
from apps.agents.models import Agent as DjangoAgent
from apps.agents.providers import build_model
from apps.agents.tools import tool_functions
from apps.knowledge.selectors import agent_knowledge_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentParts:
    key: tuple[int, int]
    public_id: str
    name: str
    description: str
    instructions: str
    model: Any
    tools: list[Any] = field(default_factory=list)  # functions, or agno tools that pause the run
    # the knowledge bases its runs retrieve from; attaching, detaching, sharing or
    # deleting one bumps the agent's version, so this is fixed per (pk, version)
    knowledge_ids: tuple[int, ...] = ()
    build_ms: float = 0.0


def _connect(model: Any) -> None:
    """Make the provider's API client now, once per warm entry, over its
    endpoint's shared connection pool, instead of on the first run. A model
    that cannot make one yet (no key) is left lazy: its run reports the error
    as a failed job. Models without a shared pool stay lazy (their own pool
    would cost memory for every warm agent)."""
    get_client = getattr(model, "get_client", None)
    if get_client is None or getattr(model, "http_client", None) is None:
        return
    try:
        get_client()
    except Exception as exc:  # noqa: BLE001 - any provider's own error type
        logger.info("model %s: no client yet (%s); the run will report it", getattr(model, "id", "?"), exc)


def config_dict(django_agent: DjangoAgent) -> dict[str, Any]:
    """The configuration `build_parts` builds from, resolved: the agent's
    definition plus the deployment settings that shape it (never a key).
    The agent sync hashes it to tell whether what runs has changed."""
    settings_part: dict[str, Any] = {"timeout": settings.AGENTOS_MODEL_TIMEOUT}
    if django_agent.model_provider == "openai":
        settings_part["base_url"] = settings.OPENAI_BASE_URL
    if django_agent.model_provider == "ollama":
        settings_part["host"] = settings.OLLAMA_HOST
    return {"name": django_agent.name, "description": django_agent.description,
            "instructions": django_agent.instructions, "provider": django_agent.model_provider,
            "model": django_agent.model_id, "options": django_agent.model_options, "tools": django_agent.tools,
            "tool_policies": django_agent.tool_policies or {}, "settings": settings_part}


def build_parts(django_agent: DjangoAgent, *, pooled: bool = True) -> AgentParts:
    """`pooled=False` for async runs (the AgentOS server): agno makes the model's async client."""
    started = time.perf_counter()
    model = build_model(django_agent.model_provider, django_agent.model_id, django_agent.model_options or {},
                        pooled=pooled)
    _connect(model)
    metrics.model_calls_timed(model)
    return AgentParts(
        key=(django_agent.pk, django_agent.version), public_id=django_agent.public_id,
        name=django_agent.name, description=django_agent.description,
        instructions=django_agent.instructions, model=model,
        tools=tool_functions(django_agent.tools or [], django_agent.tool_policies),
        knowledge_ids=tuple(agent_knowledge_ids(agent=django_agent)),
        build_ms=(time.perf_counter() - started) * 1000)


def agent_from_parts(parts: AgentParts, *, user: AbstractBaseUser | None = None, session_id: str | None = None,
                     tool_hooks: list[Callable[..., Any]] | None = None, db: Any = None,
                     context: str | None = None) -> Any:
    """Workers pass no `db`: Django owns history and hands it in as the run
    input. The AgentOS server passes `DjangoSessionDb`, which reads the same
    history from the same tables."""
    from agno.agent import Agent  # import-time cost (~0.3 s, 9 MB): web processes import this module, never build

    history = {"add_history_to_context": True, "num_history_runs": 50} if db is not None else {}
    return Agent(
        id=parts.public_id, name=parts.name, description=parts.description or None,
        instructions=parts.instructions or None, model=parts.model, tools=list(parts.tools),
        db=db, session_id=session_id, user_id=str(user.pk) if user is not None else None,
        telemetry=False, markdown=False, tool_hooks=tool_hooks, additional_context=context,
        # agno's own debug lines (prompts, tool calls, metrics) go to the `opie.agno` logger
        debug_mode=settings.AGENTOS_DEBUG, **history)
