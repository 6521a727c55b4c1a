"""Celery remote-control commands for the warm pool, on every worker at once:

    celery -A celery_app inspect opie_pool_stats
    celery -A celery_app control opie_pool_invalidate agent_pk=12

celery_app imports this module, and `config` imports celery_app while Django loads
its settings: the pool (which imports the agent model) is imported by each command,
once the app registry is ready.
"""
from __future__ import annotations

from typing import Any

from celery import bootsteps
from celery.worker.control import control_command, inspect_command


@inspect_command()
def opie_pool_stats(state: Any) -> dict[str, Any]:
    """Hits, misses, builds, evictions, in-flight runs and build time of this worker's pool."""
    from workers.pool import get_pool  # app registry not ready at import (see above)

    return get_pool().snapshot()


@control_command(args=[("agent_pk", int)], signature="[agent_pk]")
def opie_pool_invalidate(state: Any, agent_pk: int | None = None) -> dict[str, Any]:
    """Drop an agent (or, without agent_pk, every agent) from this worker's pool."""
    from workers.pool import get_pool  # app registry not ready at import (see above)

    return {"ok": True, "dropped": get_pool().invalidate(agent_pk)}


class PoolStatsStep(bootsteps.StartStopStep):
    """Adds this process's pool snapshot to `celery inspect stats`, which Flower
    shows on each worker's page. (With prefork the pools live in the children,
    so use `inspect opie_pool_stats` there.)"""

    name = "opie-pool-stats"  # a StartStopStep, so the worker lists it in `steps` and asks it for info

    def info(self, worker: Any) -> dict[str, Any]:
        from workers.pool import get_pool  # app registry not ready at import (see above)

        return {"opie_pool": get_pool().snapshot()}
