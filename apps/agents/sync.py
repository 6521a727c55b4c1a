"""Agent sync: reconcile the Django agent definitions with what runs.

For each agent: validate its model spec and tools, check that its provider is
reachable, build its agno configuration for real, check that its knowledge
is current (apps.knowledge.selectors.agent_knowledge_problems), and compare
the hash of its effective configuration (the definition plus the deployment
settings that shape it) with the one recorded at the last sync. The agent
ends `invalid` when it cannot be built (with the reason), `stale` when it can
but its knowledge is not current (with the reason; also, in a dry run only,
when its configuration changed since the last sync), else `ok`. A changed
configuration bumps the version, so warm pools drop the stale agent.
"""
from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from apps.agents.broadcast import pool_invalidate_on_commit
from apps.agents.builder import build_parts, config_dict
from apps.agents.models import Agent
from apps.agents.providers import validate_model_spec
from apps.agents.tools import validate_tool_names
from apps.cache import agent_key, invalidate_on_commit
from apps.common import DomainError
from apps.knowledge.selectors import agent_knowledge_problems

logger = logging.getLogger(__name__)
PROBE_TIMEOUT = 3.0


@dataclass
class SyncResult:
    agent_id: str
    name: str
    status: str  # ok | invalid | stale
    previous_status: str
    changed: bool  # the effective configuration differs from the last sync
    version: int
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def effective_config_hash(agent: Agent) -> str:
    """The hash of the agent's resolved configuration: its definition plus the settings that shape it."""
    definition = config_dict(agent)
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


def _probe(url: str, headers: dict[str, str] | None = None) -> None:
    try:
        response = httpx.get(url, headers=headers or {}, timeout=PROBE_TIMEOUT, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise DomainError("provider_unreachable", f"{url}: {exc.__class__.__name__}: {exc}") from exc
    if response.status_code >= 500:
        raise DomainError("provider_unreachable", f"{url} answered {response.status_code}")


def check_provider(agent: Agent) -> None:
    """Raise DomainError when the agent's provider cannot serve it."""
    provider, options = agent.model_provider, agent.model_options or {}
    if provider == "local":
        return
    if provider == "openai":
        if not settings.OPENAI_API_KEY:
            raise DomainError("provider_not_configured", "OPENAI_API_KEY is not set.")
        if settings.OPENAI_BASE_URL:
            _probe(f"{settings.OPENAI_BASE_URL.rstrip('/')}/models",
                   {"Authorization": f"Bearer {settings.OPENAI_API_KEY}"})
    elif provider == "anthropic":
        if not settings.ANTHROPIC_API_KEY:
            raise DomainError("provider_not_configured", "ANTHROPIC_API_KEY is not set.")
    elif provider == "openai_like":
        _probe(f"{str(options.get('base_url', '')).rstrip('/')}/models")
    elif provider == "ollama":
        _probe(f"{settings.OLLAMA_HOST.rstrip('/')}/api/tags")


def _check(agent: Agent) -> str:
    """The reason the agent cannot run, or '' when it can."""
    try:
        validate_model_spec(agent.model_provider, agent.model_id, agent.model_options or {})
        validate_tool_names(agent.tools or [])
        check_provider(agent)
        build_parts(agent)
    except DomainError as exc:
        return f"{exc.code}: {exc.message}"
    except Exception as exc:  # a provider class refusing its configuration
        return f"build_failed: {exc.__class__.__name__}: {exc}"
    return ""


def _knowledge_check(agent: Agent) -> str:
    """Why the agent's knowledge is not current, or '' when it is."""
    problems = agent_knowledge_problems(agent=agent)
    return f"knowledge_stale: {'; '.join(problems)}" if problems else ""


def agent_sync_one(*, agent: Agent, dry_run: bool = False) -> SyncResult:
    config_hash = effective_config_hash(agent)
    changed = bool(agent.config_hash) and agent.config_hash != config_hash
    error = _check(agent)
    stale = "" if error else _knowledge_check(agent)
    recorded = "invalid" if error else ("stale" if stale else "ok")
    status = "stale" if dry_run and changed and recorded == "ok" else recorded
    result = SyncResult(agent_id=agent.public_id, name=agent.name, status=status,
                        previous_status=agent.sync_status, changed=changed, version=agent.version,
                        error=error or stale)
    if dry_run:
        return result
    with transaction.atomic():
        updates: dict[str, Any] = {"sync_status": recorded, "sync_error": error or stale,
                                   "synced_at": timezone.now(), "config_hash": config_hash}
        if changed:
            updates["version"] = F("version") + 1
            pool_invalidate_on_commit(agent_pk=agent.pk)
        Agent.objects.filter(pk=agent.pk).update(**updates)
        invalidate_on_commit([agent_key(agent.public_id)])  # the snapshot shows the version and status
    result.version = Agent.objects.values_list("version", flat=True).get(pk=agent.pk)
    return result


def agents_for_sync(*, user_id: int | None = None, agent_id: str | None = None) -> QuerySet[Agent]:
    agents = Agent.objects.all().order_by("id")
    if user_id is not None:
        agents = agents.filter(owner_id=user_id)
    if agent_id:
        agents = agents.filter(public_id=agent_id)
        if not agents.exists():
            raise DomainError("agent_not_found", f"No agent {agent_id}.", status=404)
    return agents


def agents_sync(*, agents: Iterable[Agent], dry_run: bool = False,
                progress: Callable[[int, int, SyncResult], None] | None = None) -> list[SyncResult]:
    todo = list(agents)
    results = []
    for done, agent in enumerate(todo, start=1):
        result = agent_sync_one(agent=agent, dry_run=dry_run)
        results.append(result)
        if progress is not None:
            progress(done, len(todo), result)
    return results


def sync_summary(results: list[SyncResult]) -> dict[str, int]:
    summary = {"total": len(results), "ok": 0, "invalid": 0, "stale": 0, "changed": 0}
    for result in results:
        summary[result.status] += 1
        summary["changed"] += int(result.changed)
    return summary


_LOCK_KEY = 0x0A6E7505  # one PostgreSQL advisory lock for every sync, wherever it runs


class SyncBusy(DomainError):
    status = 409

    def __init__(self) -> None:
        super().__init__("sync_in_progress", "Another agent sync is running; this one did nothing.")


@contextmanager
def sync_lock() -> Iterator[None]:
    """Only one sync at a time, even with two beat processes started by mistake.
    A session-level advisory lock: released at the end, or when its connection dies."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_KEY])
        if not cursor.fetchone()[0]:
            raise SyncBusy()
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
