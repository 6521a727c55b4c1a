"""Agent writes. Every change bumps `version` so warm pools drop stale copies,
and invalidates, after commit, the cache entries it changes (apps.cache)."""
from __future__ import annotations

from typing import Any, Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F

from apps.agents.broadcast import pool_invalidate_on_commit
from apps.agents.models import Agent
from apps.agents.providers import validate_model_spec
from apps.agents.tools import validate_tool_names, validate_tool_policies
from apps.cache import PERMS_PUBLIC, agent_key, invalidate_on_commit, perms_key, session_key
from apps.common import DomainError

_EDITABLE = {"name", "description", "instructions", "model_provider", "model_id", "model_options",
             "tools", "tool_policies", "visibility", "enabled"}


def _validate(fields: dict[str, Any]) -> None:
    if "name" in fields and not str(fields["name"]).strip():
        raise DomainError("invalid_input", "name must not be empty.")
    if "visibility" in fields and fields["visibility"] not in Agent.Visibility.values:
        raise DomainError("invalid_visibility",
                          f"visibility must be one of {', '.join(Agent.Visibility.values)}.")
    if "tools" in fields:
        validate_tool_names(fields["tools"])
    if "tool_policies" in fields:
        validate_tool_policies(fields["tool_policies"])
    if {"model_provider", "model_id", "model_options"} & fields.keys():
        validate_model_spec(fields.get("model_provider", "local"), fields.get("model_id", "echo"),
                            fields.get("model_options") or {})


def _set_shared_with(agent: Agent, usernames: list[str] | None) -> None:
    if usernames is None:
        return
    users = list(get_user_model().objects.filter(username__in=usernames))
    missing = set(usernames) - {u.get_username() for u in users}
    if missing:
        # do not reveal which usernames exist beyond what the caller typed
        raise DomainError("invalid_shared_with", "shared_with names users that cannot be shared with.")
    agent.shared_with.set(users)


Audience = tuple[set[int], bool]


def agent_audience(agent: Agent) -> Audience:
    """Whose permission entries list the agent: its owner and the users it names in
    `shared_with` (whatever its visibility), and everyone's when it is public."""
    return {agent.owner_id, *agent.shared_with.values_list("pk", flat=True)}, \
        agent.visibility == Agent.Visibility.PUBLIC


def agent_cache_invalidate_on_commit(*, agent: Agent, before: Audience | None = None,
                                     session_ids: Iterable[str] = ()) -> None:
    """Drop the agent's snapshot and the permission entries of everyone it
    concerned `before` the write or concerns after it, once the write commits."""
    users, public = agent_audience(agent)
    if before is not None:
        users, public = users | before[0], public or before[1]
    keys = [agent_key(agent.public_id), *(perms_key(user_id) for user_id in users)]
    if public:
        keys.append(PERMS_PUBLIC)
    keys.extend(session_key(session_id) for session_id in session_ids)
    invalidate_on_commit(keys)


@transaction.atomic
def agent_create(*, owner: AbstractBaseUser, name: str, instructions: str = "", description: str = "",
                 model_provider: str = "local", model_id: str = "echo",
                 model_options: dict[str, Any] | None = None, tools: list[str] | None = None,
                 tool_policies: dict[str, str] | None = None, visibility: str = Agent.Visibility.PRIVATE,
                 shared_with: list[str] | None = None) -> Agent:
    fields = {"name": name.strip(), "instructions": instructions, "description": description,
              "model_provider": model_provider, "model_id": model_id,
              "model_options": model_options or {}, "tools": tools or [], "tool_policies": tool_policies or {},
              "visibility": visibility}
    _validate(fields)
    agent = Agent.objects.create(owner=owner, **fields)
    _set_shared_with(agent, shared_with)
    agent_cache_invalidate_on_commit(agent=agent)
    return agent


@transaction.atomic
def agent_update(*, agent: Agent, shared_with: list[str] | None = None, **changes: Any) -> Agent:
    unknown = set(changes) - _EDITABLE
    if unknown:
        raise DomainError("invalid_input", f"cannot change {', '.join(sorted(unknown))}.")
    model_fields = {"model_provider", "model_id", "model_options"}
    if model_fields & changes.keys():
        # validate the effective model spec, not only the part that changed
        for name in model_fields - changes.keys():
            changes[name] = getattr(agent, name)
    if "name" in changes:
        changes["name"] = str(changes["name"]).strip()
    _validate(changes)
    before = agent_audience(agent)
    for name, value in changes.items():
        setattr(agent, name, value)
    _set_shared_with(agent, shared_with)
    agent.version = F("version") + 1
    agent.save()
    agent.refresh_from_db()
    pool_invalidate_on_commit(agent_pk=agent.pk)
    agent_cache_invalidate_on_commit(agent=agent, before=before)
    return agent


@transaction.atomic
def agent_delete(*, agent: Agent) -> None:
    pool_invalidate_on_commit(agent_pk=agent.pk)
    # its sessions go with it (cascade): their summaries must not outlive them
    agent_cache_invalidate_on_commit(agent=agent, session_ids=list(agent.sessions.values_list("public_id", flat=True)))
    agent.delete()
