"""Tell every worker to drop an agent from its warm pool (after an edit or delete).

A version bump already makes the next job rebuild; this frees the stale entry
on every worker at once. Best effort: a lost broadcast costs memory, not
correctness. Sent through Celery's current app (celery_app, which `config` loads):
the commands are the workers' own (workers/control.py), named here, never imported."""
from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)


def pool_invalidate_on_commit(*, agent_pk: int) -> None:
    transaction.on_commit(lambda: pool_invalidate(agent_pk=agent_pk))


def pool_invalidate(*, agent_pk: int | None) -> None:
    try:
        current_app.control.broadcast("opie_pool_invalidate", arguments={"agent_pk": agent_pk})
    except Exception:
        logger.warning("pool invalidation broadcast failed", exc_info=True)


def pool_stats(timeout: float = 0.5) -> dict[str, Any]:
    """Each live worker's pool snapshot, by worker name."""
    try:
        replies = current_app.control.broadcast("opie_pool_stats", reply=True, timeout=timeout) or []
    except Exception:
        logger.warning("pool stats broadcast failed", exc_info=True)
        return {}
    return {name: stats for reply in replies for name, stats in reply.items()}
