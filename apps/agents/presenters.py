from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from apps.agents.models import Agent
from apps.agents.providers import shown_options


def agent_snapshot(agent: Agent) -> dict[str, Any]:
    """An agent as any viewer may be shown it, plus its keys: what the cache keeps
    (`agentos_agent_<public_id>`). `agent_view` turns it into one viewer's answer."""
    return {
        "pk": agent.pk,
        "owner_id": agent.owner_id,
        "id": agent.public_id,
        "name": agent.name,
        "description": agent.description,
        "instructions": agent.instructions,
        "model": {"provider": agent.model_provider, "id": agent.model_id,
                  "options": shown_options(agent.model_provider, agent.model_options)},
        "tools": list(agent.tools or []),
        "tool_policies": dict(agent.tool_policies or {}),
        "visibility": agent.visibility,
        "version": agent.version,
        "enabled": agent.enabled,
        "is_vault": agent.is_vault,
        "owner": agent.owner.get_username(),
        "created_at": agent.created_at.isoformat(),
        "updated_at": agent.updated_at.isoformat(),
    }


def agent_view(snapshot: dict[str, Any], *, viewer: AbstractBaseUser) -> dict[str, Any]:
    is_owner = snapshot["owner_id"] == viewer.pk
    return {
        "id": snapshot["id"],
        "name": snapshot["name"],
        "description": snapshot["description"],
        # an agent's prompt is its owner's work: others use the agent but do not read it
        "instructions": snapshot["instructions"] if is_owner else None,
        "model": snapshot["model"],
        "tools": snapshot["tools"],
        "tool_policies": snapshot.get("tool_policies", {}),  # .get: a snapshot cached before they existed
        "visibility": snapshot["visibility"],
        "version": snapshot["version"],
        "enabled": snapshot["enabled"],
        "owner": snapshot["owner"],
        "is_owner": is_owner,
        "created_at": snapshot["created_at"],
        "updated_at": snapshot["updated_at"],
    }


def agent_to_dict(agent: Agent, *, viewer: AbstractBaseUser) -> dict[str, Any]:
    return agent_view(agent_snapshot(agent), viewer=viewer)
