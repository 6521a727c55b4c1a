"""Which agents a user may see and use (RBAC lives here only).

The request paths read through the cache (apps.cache): the ids a user may use
(`agentos_perms_<user_id>` plus `agentos_perms_public`), then each agent's
snapshot (`agentos_agent_<public_id>`). Every agent write invalidates the
permission entries of everyone it concerns (apps.agents.services), so the
cached answer is the database's answer."""
from __future__ import annotations

import functools
from typing import Any, Iterable

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef, Q, QuerySet

from apps.agents.models import Agent
from apps.agents.presenters import agent_snapshot
from apps.cache import PERMS_PUBLIC, agent_key, perms_key, read_many
from apps.common import NotFound, fetch_instances

AgentSharedWith = Agent.shared_with.through


# Who may use an agent, in parts: agent_list_visible and agent_get_visible use all of
# them; agent_ids_visible caches the user's own part and the public part apart.
def _owned_by(user_id: int) -> Q:
    return Q(owner_id=user_id)


def _shared_with(user_id: int) -> Q:
    named = AgentSharedWith.objects.filter(agent_id=OuterRef("pk"), user_id=user_id)
    return Q(Exists(named), visibility=Agent.Visibility.SHARED)


_PUBLIC = Q(visibility=Agent.Visibility.PUBLIC)
_ENABLED = Q(enabled=True)


def _visible(user_id: int, *, include_vault: bool) -> Q:
    """The rule: an enabled agent the user owns, that is public, or that is shared with
    them; a vault agent only while AGENTOS_INCLUDE_VAULT_AGENTS is on. (The shares come
    last: PostgreSQL reads them only for an agent neither owned nor public.)"""
    rule = (_owned_by(user_id) | _PUBLIC | _shared_with(user_id)) & _ENABLED
    return rule if include_vault else rule & Q(is_vault=False)


def agent_list_visible(*, user: AbstractBaseUser) -> QuerySet[Agent]:
    """Every agent the user may see and use."""
    return Agent.objects.filter(_visible(user.pk, include_vault=settings.AGENTOS_INCLUDE_VAULT_AGENTS))


def agent_ids_visible(*, user: AbstractBaseUser) -> set[str]:
    """Public ids of the agents `agent_list_visible` returns, read through the cache."""
    own = perms_key(user.pk)

    def load(missing: list[str]) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {}
        if own in missing:
            granted = (_owned_by(user.pk) | _shared_with(user.pk)) & _ENABLED
            ids[own] = list(Agent.objects.filter(granted).values_list("public_id", flat=True))
        if PERMS_PUBLIC in missing:
            ids[PERMS_PUBLIC] = list(Agent.objects.filter(_PUBLIC & _ENABLED).values_list("public_id", flat=True))
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


# agent_get_visible's statement: `_visible` compiled by the ORM once per process (and per
# AGENTOS_INCLUDE_VAULT_AGENTS), with stand-ins where the user's and the agent's ids go.
_USER, _AGENT = -7_304_118, "agent-id-stand-in"
_COLUMNS = [field.attname for field in Agent._meta.concrete_fields]  # primary key first


@functools.cache
def _visible_sql(include_vault: bool) -> tuple[str, list[Any]]:
    rows = Agent.objects.filter(_visible(_USER, include_vault=include_vault), public_id=_AGENT).order_by()
    compiler = rows.query.get_compiler(using=rows.db)
    sql, params = compiler.as_sql()
    # the ORM selects every concrete field, in the order fetch_instances builds them from
    if [column.target.attname for column, _, _ in compiler.select] != _COLUMNS:
        raise RuntimeError("the ORM no longer selects Agent's concrete fields in order")
    # plain values (a TextChoices member is a str subclass the driver adapts more slowly)
    return sql, [str(p) if isinstance(p, str) else p for p in params]


def agent_get_visible(*, user: AbstractBaseUser, agent_id: str) -> Agent:
    """The row itself (for writes that hang off it): always from the database, by
    `agent_list_visible`'s rule in one indexed read. It is on every send's path, where
    composing the ORM's query costs more than running it, so the statement is compiled
    once and its rows become instances directly (apps.common.fetch_instances)."""
    sql, template = _visible_sql(bool(settings.AGENTOS_INCLUDE_VAULT_AGENTS))
    params = [user.pk if p == _USER and type(p) is int else agent_id if p == _AGENT else p for p in template]
    found = fetch_instances(sql, params, Agent, fields={Agent: _COLUMNS})
    if not found or not isinstance(found[0], Agent):
        raise NotFound("agent")
    return found[0]


def agent_get_owned(*, user: AbstractBaseUser, agent_id: str) -> Agent:
    """Only the owner may edit or delete; to anyone else the agent does not exist."""
    agent = Agent.objects.filter(owner=user, public_id=agent_id).first()
    if agent is None:
        raise NotFound("agent")
    return agent
