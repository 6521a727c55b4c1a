"""`AgentOSService(user)`: the seed's Python API, and the one path the REST API,
the web UI and the management commands use. Every method is RBAC-scoped to
`user`; another user's objects raise NotFound."""
from __future__ import annotations

from typing import Any

import agno
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from apps import task_routes
from apps.agents.broadcast import pool_stats
from apps.agents.presenters import agent_to_dict, agent_view
from apps.agents.selectors import (
    agent_get_owned,
    agent_get_visible,
    agent_ids_visible,
    agent_snapshot_get_visible,
    agent_snapshots_visible,
)
from apps.agents.services import agent_create, agent_delete, agent_update
from apps.chat.presenters import session_detail_to_dict, session_to_dict
from apps.chat.selectors import session_get_owned, session_list, session_messages, session_summary_get_owned
from apps.chat.services import session_create
from apps.common import DomainError, NotFound, page_newest_first
from apps.jobs.actions import job_actions_decide
from apps.jobs.dispatch import queue_depth
from apps.jobs.presenters import job_accepted_to_dict, job_to_dict
from apps.jobs.selectors import job_get_owned, job_list
from apps.jobs.services import job_cancel_request, job_retry, message_send, sync_job_create
from apps.knowledge.services import vault_agent_ensure

OPIE_VERSION = "0.1.0"
QUEUES = list(task_routes.QUEUES)


class AgentOSService:
    def __init__(self, user: AbstractBaseUser) -> None:
        self.user = user

    # info
    def info(self) -> dict[str, Any]:
        info = {"name": "Opie AgentOS", "version": OPIE_VERSION,
                "agno_version": getattr(agno, "__version__", "3.1.10"), "enabled": settings.AGENTOS_ENABLED,
                "agent_count": len(agent_ids_visible(user=self.user)), "queues": QUEUES}
        if getattr(self.user, "is_staff", False):
            info["pool"] = pool_stats()  # per worker: hits, misses, builds, evictions, in flight
            info["queue"] = queue_depth()  # queued and running per user, the oldest queued job's age
        return info

    # agents
    # agent and session reads go through the cache (apps.cache); writes invalidate it
    def get_available_agents(self) -> list[dict[str, Any]]:
        vault_agent_ensure(user=self.user)
        return [agent_view(snapshot, viewer=self.user) for snapshot in agent_snapshots_visible(user=self.user)]

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        return agent_view(agent_snapshot_get_visible(user=self.user, agent_id=agent_id), viewer=self.user)

    def create_agent(self, **fields: Any) -> dict[str, Any]:
        return agent_to_dict(agent_create(owner=self.user, **fields), viewer=self.user)

    def update_agent(self, agent_id: str, **changes: Any) -> dict[str, Any]:
        agent = self._owned_agent(agent_id)
        return agent_to_dict(agent_update(agent=agent, **changes), viewer=self.user)

    def delete_agent(self, agent_id: str) -> None:
        agent_delete(agent=self._owned_agent(agent_id))

    def _owned_agent(self, agent_id: str) -> Any:
        try:
            return agent_get_owned(user=self.user, agent_id=agent_id)
        except NotFound:
            agent_get_visible(user=self.user, agent_id=agent_id)  # invisible: stays a 404
            raise DomainError("not_owner", "Only the agent's owner may change it.", status=403) from None

    # sessions
    def create_session(self, agent_id: str, title: str = "") -> dict[str, Any]:
        agent = agent_get_visible(user=self.user, agent_id=agent_id)
        return session_to_dict(session_create(user=self.user, agent=agent, title=title))

    def list_sessions(self, *, agent_id: str | None = None, cursor: str | None = None,
                      limit: int = 20) -> dict[str, Any]:
        page, after = page_newest_first(session_list(user=self.user, agent_id=agent_id), cursor, limit)
        return {"sessions": [session_to_dict(s) for s in page], "next": after}

    def get_session(self, session_id: str) -> dict[str, Any]:
        found = session_summary_get_owned(user=self.user, session_id=session_id)
        return session_detail_to_dict(found.summary, session_messages(session=found.pk))

    # messages and jobs
    def send_message(self, agent_id: str, message: str, session_id: str | None = None, *,
                     callback_url: str = "", multitask: str = "enqueue",
                     timeout: int | None = None, priority: str = "normal") -> dict[str, Any]:
        agent = agent_get_visible(user=self.user, agent_id=agent_id)
        session = session_get_owned(user=self.user, session_id=session_id) if session_id else None
        job = message_send(user=self.user, agent=agent, message=message, session=session,
                           callback_url=callback_url, multitask=multitask, timeout=timeout, priority=priority)
        return job_accepted_to_dict(job)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return job_to_dict(job_get_owned(user=self.user, job_id=job_id))

    def list_jobs(self, *, status: str | None = None, kind: str | None = None, agent_id: str | None = None,
                  session_id: str | None = None, cursor: str | None = None, limit: int = 20) -> dict[str, Any]:
        jobs = job_list(user=self.user, status=status, kind=kind, agent_id=agent_id, session_id=session_id)
        page, after = page_newest_first(jobs, cursor, limit)
        return {"jobs": [job_to_dict(j) for j in page], "next": after}

    def start_sync(self, *, agent_id: str | None = None, user_id: int | None = None, dry_run: bool = False,
                   callback_url: str = "") -> dict[str, Any]:
        job = sync_job_create(user=self.user, agent_id=agent_id, user_id=user_id, dry_run=dry_run,
                              callback_url=callback_url)
        return job_to_dict(job)

    def request_job_cancel(self, job_id: str) -> dict[str, Any]:
        return job_to_dict(job_cancel_request(job=job_get_owned(user=self.user, job_id=job_id)))

    def retry_job(self, job_id: str) -> dict[str, Any]:
        """Run a failed job of the user's again as a new job (apps.jobs.services.job_retry)."""
        return job_to_dict(job_retry(job=job_get_owned(user=self.user, job_id=job_id)))

    def decide_actions(self, job_id: str, decisions: Any) -> dict[str, Any]:
        """Decide pending actions of a paused job (its owner; staff, recorded as an override)."""
        return job_to_dict(job_actions_decide(user=self.user, job_id=job_id, decisions=decisions))
