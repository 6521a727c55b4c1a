"""Which agents a user may see and use (RBAC lives here only).

The request paths read through the cache (apps.cache): the ids a user may use
(`agentos_perms_<user_id>` plus `agentos_perms_public`), then each agent's
snapshot (`agentos_agent_<public_id>`). Every agent write invalidates the
permission entries of everyone it concerns (apps.agents.services), so the
cached answer is the database's answer."""
from __future__ import annotations

from typing import Any, Iterable

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from apps.agents.models import Agent
from apps.agents.presenters import agent_snapshot
from apps.cache import PERMS_PUBLIC, agent_key, perms_key, read_many
from apps.common import NotFound, columns, fetch_instances


def _granted(user: AbstractBaseUser) -> Q:
    return Q(owner=user) | Q(visibility=Agent.Visibility.SHARED, shared_with=user)


def agent_list_visible(*, user: AbstractBaseUser) -> QuerySet[Agent]:
    """Enabled agents the user owns, that are shared with them, or that are public."""
    grant = _granted(user) | Q(visibility=Agent.Visibility.PUBLIC)
    agents = Agent.objects.filter(grant, enabled=True)
    if not settings.AGENTOS_INCLUDE_VAULT_AGENTS:  # vault agents exist only while the setting is on
        agents = agents.exclude(is_vault=True)
    return agents.distinct()


def agent_ids_visible(*, user: AbstractBaseUser) -> set[str]:
    """Public ids of the agents `agent_list_visible` returns, read through the cache."""
    own = perms_key(user.pk)

    def load(missing: list[str]) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {}
        if own in missing:
            ids[own] = list(Agent.objects.filter(_granted(user), enabled=True)
                            .values_list("public_id", flat=True).distinct())
        if PERMS_PUBLIC in missing:
            ids[PERMS_PUBLIC] = list(Agent.objects.filter(visibility=Agent.Visibility.PUBLIC, enabled=True)
                                     .values_list("public_id", flat=True))
        return ids

    granted = read_many([own, PERMS_PUBLIC], load)
    return set(granted[own]) | set(granted[PERMS_PUBLIC])


def agent_snapshots(*, agent_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The snapshots of these agents (those that exist), by name, read through the cache.
    No RBAC here: pass ids from `agent_ids_visible`."""
    keys = {agent_key(agent_id): agent_id for agent_id in agent_ids}

    def load(missing: list[str]) -> dict[str, dict[str, Any]]:
        rows = Agent.objects.filter(public_id__in=[keys[key] for key in missing]).select_related("owner")
        return {agent_key(agent.public_id): agent_snapshot(agent) for agent in rows}

    found = read_many(list(keys), load).values()
    return sorted(found, key=lambda s: (s["name"].casefold(), s["name"], s["pk"]))


def _shown(snapshot: dict[str, Any]) -> bool:
    """Vault agents exist only while AGENTOS_INCLUDE_VAULT_AGENTS is on."""
    return settings.AGENTOS_INCLUDE_VAULT_AGENTS or not snapshot.get("is_vault", False)


def agent_snapshots_visible(*, user: AbstractBaseUser) -> list[dict[str, Any]]:
    return [s for s in agent_snapshots(agent_ids=agent_ids_visible(user=user)) if _shown(s)]


def agent_snapshot_get_visible(*, user: AbstractBaseUser, agent_id: str) -> dict[str, Any]:
    found = agent_snapshots(agent_ids=[agent_id]) if agent_id in agent_ids_visible(user=user) else []
    if not found or not _shown(found[0]):
        raise NotFound("agent")
    return found[0]


_ENABLED_AGENT_SQL = f"SELECT {columns(Agent, 'a')} FROM {Agent._meta.db_table} a WHERE a.public_id = %s AND a.enabled"


def agent_get_visible(*, user: AbstractBaseUser, agent_id: str) -> Agent:
    """The row itself (for writes that hang off it): always from the database.
    The same rule as `agent_list_visible`, by one indexed read (and a second
    only for an agent shared with named users): it is on every send's path,
    so that read is written once (apps.common.fetch_instances)."""
    found = fetch_instances(_ENABLED_AGENT_SQL, [agent_id], Agent)
    agent = found[0] if found else None
    if not isinstance(agent, Agent) or (agent.is_vault and not settings.AGENTOS_INCLUDE_VAULT_AGENTS):
        raise NotFound("agent")
    if agent.owner_id == user.pk or agent.visibility == Agent.Visibility.PUBLIC:
        return agent
    if agent.visibility == Agent.Visibility.SHARED and agent.shared_with.filter(pk=user.pk).exists():
        return agent
    raise NotFound("agent")


def agent_get_owned(*, user: AbstractBaseUser, agent_id: str) -> Agent:
    """Only the owner may edit or delete; to anyone else the agent does not exist."""
    agent = Agent.objects.filter(owner=user, public_id=agent_id).first()
    if agent is None:
        raise NotFound("agent")
    return agent
