from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from apps.agents.models import Agent


def agent_to_dict(agent: Agent, *, viewer: AbstractBaseUser) -> dict[str, Any]:
    is_owner = agent.owner_id == viewer.pk
    return {
        "id": agent.public_id,
        "name": agent.name,
        "description": agent.description,
        # an agent's prompt is its owner's work: others use the agent but do not read it
        "instructions": agent.instructions if is_owner else None,
        "model": {"provider": agent.model_provider, "id": agent.model_id,
                  "options": agent.model_options or {}},
        "tools": list(agent.tools or []),
        "visibility": agent.visibility,
        "version": agent.version,
        "enabled": agent.enabled,
        "owner": agent.owner.get_username(),
        "is_owner": is_owner,
        "created_at": agent.created_at.isoformat(),
        "updated_at": agent.updated_at.isoformat(),
    }
