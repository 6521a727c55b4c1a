"""Per-process pool of warm agent parts, keyed by (agent pk, version).

What is costly to build (the model client with its HTTP pool, the tools) is
built once per key and shared; every run checks out a fresh agno Agent over
those parts, because an Agent's per-run state races across threads. A new
version of an agent is a new key, so an edit takes effect on the next job;
a broadcast (`opie_pool_invalidate`) drops an agent on every worker at once.
The pool is an LRU bounded by AGENTOS_POOL_SIZE, and entries idle longer
than AGENTOS_POOL_IDLE_SECONDS are evicted.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from django.conf import settings
from django.db.models import Max

from apps import metrics
from apps.agents.builder import AgentParts, agent_from_parts, build_parts
from apps.agents.models import Agent as DjangoAgent


@dataclass
class PoolStats:
    hits: int = 0
    misses: int = 0
    builds: int = 0
    evictions: int = 0
    invalidations: int = 0
    in_flight: int = 0
    build_ms_total: float = 0.0


class AgentPool:
    def __init__(self, capacity: int, idle_seconds: float = 1800.0) -> None:
        self.capacity = capacity
        self.idle_seconds = idle_seconds
        self._parts: OrderedDict[tuple[int, int], tuple[AgentParts, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = PoolStats()

    def parts_for(self, agent: DjangoAgent) -> AgentParts:
        key = (agent.pk, agent.version)
        now = time.monotonic()
        with self._lock:
            entry = self._parts.get(key)
            if entry is not None:
                self._parts[key] = (entry[0], now)
                self._parts.move_to_end(key)
                self.stats.hits += 1
                metrics.POOL_HITS.inc()
                return entry[0]
            self.stats.misses += 1
            metrics.POOL_MISSES.inc()
        # build outside the lock: one slow provider must not stall every other run
        parts = build_parts(agent)
        with self._lock:
            self.stats.builds += 1
            metrics.POOL_BUILDS.inc()
            self.stats.build_ms_total += parts.build_ms
            self._parts[key] = (parts, now)
            self._parts.move_to_end(key)
            self._evict(now, keep=key)
        return parts

    def _evict(self, now: float, keep: tuple[int, int]) -> None:
        """Under the lock: older versions of `keep`'s agent, idle entries, then LRU overflow."""
        for key, (_, used) in list(self._parts.items()):
            if key != keep and (key[0] == keep[0] or now - used > self.idle_seconds):
                del self._parts[key]
                self.stats.evictions += 1
        while len(self._parts) > self.capacity:
            self._parts.popitem(last=False)
            self.stats.evictions += 1

    def checkout(self, agent: DjangoAgent | AgentParts, *, user: Any, session_id: str,
                 tool_hooks: list[Any] | None = None, context: str | None = None) -> Any:
        """A fresh agno Agent over warm parts, for one run only (`context`: this run's knowledge sources).
        Pass the parts when `parts_for` already gave them (a run reads them first for its knowledge)."""
        parts = agent if isinstance(agent, AgentParts) else self.parts_for(agent)
        return agent_from_parts(parts, user=user, session_id=session_id, tool_hooks=tool_hooks, context=context)

    def invalidate(self, agent_pk: int | None = None) -> int:
        """Drop one agent's entries (or all); returns how many went."""
        with self._lock:
            doomed = [k for k in self._parts if agent_pk is None or k[0] == agent_pk]
            for key in doomed:
                del self._parts[key]
            self.stats.invalidations += len(doomed)
            return len(doomed)

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self.stats.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.stats.in_flight -= 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            builds = self.stats.builds
            return {"size": len(self._parts), "capacity": self.capacity, **vars(self.stats),
                    "build_ms_avg": round(self.stats.build_ms_total / builds, 3) if builds else None,
                    "agents": sorted({k[0] for k in self._parts})}

    def clear(self) -> None:
        self.invalidate(None)


def prewarm(pool: AgentPool, count: int) -> int:
    """Build the `count` most recently used enabled agents; returns how many were built."""
    if count <= 0:
        return 0
    recent = (DjangoAgent.objects.filter(enabled=True, jobs__isnull=False)
              .annotate(last_used=Max("jobs__created_at")).order_by("-last_used")[:count])
    for agent in recent:
        pool.parts_for(agent)
    return len(recent)


_pool: AgentPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> AgentPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = AgentPool(settings.AGENTOS_POOL_SIZE, settings.AGENTOS_POOL_IDLE_SECONDS)
        return _pool


def reset_pool() -> None:
    """Drop the pool (after fork: model clients must not cross a process boundary)."""
    global _pool
    with _pool_lock:
        _pool = None
