"""agno's storage interface over the Django chat tables, for the AgentOS server.

AgentOS (`manage.py agentos_start`) reads and writes sessions through an agno
`AsyncBaseDb`. This one stores nothing of its own: a session is a
`ChatSession`, a run is a finished message `Job` with its user and assistant
`ChatMessage`s. So there is one transcript, whichever door a message came in
by: a conversation started over the REST API continues in AgentOS with its
history, and AgentOS runs show up in `/api/v1/agentos/sessions/`.

A run that pauses for a person (a tool whose policy is `approve` or `input`)
is a `requires_action` job with its stored run and actions, as a worker's
paused run is (apps.jobs.actions); the session offers it back to agno as a
PAUSED run, so AgentOS's own `POST /agents/<id>/runs/<run_id>/continue` goes
on from it, and the same job ends when the continued run does.

Every read and write is scoped to the user the request authenticated as
(`current_user`, set by the server's auth middleware), never to the `user_id`
a client passes: another user's session does not exist here either. Every
write drops the session's cached summary once it commits (`session_changed`),
as the REST API's own writes do, so the API never shows an old title or a
deleted session.

agno features Opie does not keep (memories, evals, traces, knowledge contents,
learnings) answer empty.

The Django side runs on a bounded pool of threads (`in_db_thread`), so the
storage work of concurrent runs overlaps instead of queueing on one thread.
"""
from __future__ import annotations

import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, ParamSpec, TypeVar

from agno.db.base import AsyncBaseDb, SessionType
from agno.run.base import RunStatus
from agno.session.agent import AgentSession
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction

from apps.agents.selectors import agent_get_visible
from apps.chat.models import ChatSession
from apps.chat.selectors import session_messages
from apps.chat.services import session_changed, session_create
from apps.jobs.models import Job, RunPause
from apps.jobs.services import message_record_end, message_record_paused
from workers.paused import pause_actions, pause_state

logger = logging.getLogger(__name__)

current_user: contextvars.ContextVar[Any] = contextvars.ContextVar("opie_agentos_user", default=None)

P = ParamSpec("P")
R = TypeVar("R")

# The server's database calls in flight at once (AGENTOS_SERVER_DB_THREADS, 16).
# Django connections are per thread, so this also bounds the PostgreSQL
# connections AgentOS holds: each thread keeps one for DB_CONN_MAX_AGE as a web
# thread does (with DB_POOL_SIZE, hands it back to the pool after each call).
# 4, 16 and 64 threads served 200 concurrent runs in about the same time on two
# cores, bound by CPU; 1 is what sync_to_async's default gave (the bench's
# scenario 9 measures both). Its own pool, not the loop's default executor:
# agno runs sync tools there (asyncio.to_thread), and they must not hold up
# session reads and writes. Built on first use, after settings are read.
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _db_threads() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=max(1, settings.AGENTOS_SERVER_DB_THREADS),
                                           thread_name_prefix="agentos-db")
        return _executor


def in_db_thread(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` as a coroutine function that runs on the server's database threads.

    sync_to_async's default (thread_sensitive=True) runs every call of the whole
    process on one thread, one after another: each AgentOS run's session reads
    and writes waited for every other run's. These threads outlive requests and
    no request_started/finished signal reaches them, so each call is bracketed
    like a Django request: close_old_connections() before and after closes a
    connection that errored or outlived CONN_MAX_AGE. sync_to_async runs `func`
    in a copy of the caller's context, so it sees `current_user`."""
    def hygienic(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(hygienic, thread_sensitive=False, executor=_db_threads())


# agno features Opie does not store answer empty, never with an error. Listings
# come back as (rows, total) when agno asks for raw rows (deserialize=False).
_LISTINGS = {"get_user_memories", "get_eval_runs", "get_learnings", "get_knowledge_contents"}
_PAIRS = {"get_traces": ([], 0), "get_trace_stats": ([], 0), "get_user_memory_stats": ([], 0),
          "get_metrics": ([], None)}
_LISTS = {"get_all_memory_topics", "get_spans"}


def _epoch(value: Any) -> int:
    return int(value.timestamp())


class DjangoSessionDb(AsyncBaseDb):
    def __init__(self) -> None:
        super().__init__(id="opie-django")

    # schema: the Django migrations own it
    async def table_exists(self, table_name: str) -> bool:
        return True

    async def get_latest_schema_version(self, *args: Any, **kwargs: Any) -> str:
        return "opie"

    async def upsert_schema_version(self, *args: Any, **kwargs: Any) -> None:
        return None

    # sessions
    async def get_session(self, session_id: str, session_type: SessionType | None = None,
                          user_id: str | None = None, deserialize: bool | None = True,
                          runs_limit: int | None = None) -> Any:
        data = await in_db_thread(self._session_dict)(session_id, runs_limit)
        if data is None or not deserialize:
            return data
        return AgentSession.from_dict(data)

    async def get_sessions(self, session_type: SessionType | None = None, user_id: str | None = None,
                           component_id: str | None = None, session_name: str | None = None,
                           start_timestamp: int | None = None, end_timestamp: int | None = None,
                           limit: int | None = None, page: int | None = None, sort_by: str | None = None,
                           sort_order: str | None = None, deserialize: bool | None = True,
                           include_runs: bool = True) -> Any:
        rows, total = await in_db_thread(self._sessions)(component_id, session_name, limit, page, sort_order,
                                                         include_runs)
        if not deserialize:
            return rows, total
        return [AgentSession.from_dict(row) for row in rows]

    async def upsert_session(self, session: Any, deserialize: bool | None = True) -> Any:
        await in_db_thread(self._upsert_session)(session)
        return session if deserialize else session.to_dict()

    async def upsert_sessions(self, sessions: list[Any], deserialize: bool | None = True,
                              preserve_updated_at: bool = False) -> list[Any]:
        return [await self.upsert_session(session, deserialize) for session in sessions]

    async def rename_session(self, session_id: str, session_type: SessionType | None, session_name: str,
                             user_id: str | None = None, deserialize: bool | None = True) -> Any:
        renamed = await in_db_thread(self._rename)(session_id, session_name)
        return await self.get_session(session_id, deserialize=deserialize) if renamed else None

    async def delete_session(self, session_id: str, user_id: str | None = None) -> bool:
        return await in_db_thread(self._delete)([session_id]) > 0

    async def delete_sessions(self, session_ids: list[str], user_id: str | None = None) -> None:
        await in_db_thread(self._delete)(session_ids)

    # runs
    async def upsert_run(self, run: Any, session_id: str, user_id: str | None = None,
                         run_index: int | None = None) -> None:
        await in_db_thread(self._record_run)(run, session_id)

    # ---- the Django side (sync) ----
    def _user(self) -> Any:
        user = current_user.get()
        if user is None:
            raise PermissionError("no authenticated user for this request")
        return user

    def _owned(self) -> Any:
        return ChatSession.objects.select_related("agent").filter(owner=self._user())

    def _runs(self, session: Any, limit: int | None) -> list[dict[str, Any]]:
        runs: dict[int, dict[str, Any]] = {}
        for message in session_messages(session=session):
            job = message.job
            if job is not None and job.status == Job.Status.REQUIRES_ACTION and job.pk not in runs:
                paused = self._paused_run(job)
                if paused is not None:
                    runs[job.pk] = paused
                continue
            if job is None or job.status != "succeeded":
                continue  # history is the completed exchanges, as for the workers
            run = runs.setdefault(job.pk, {
                "run_id": (job.input or {}).get("agno_run_id") or job.public_id, "agent_id": session.agent.public_id,
                "session_id": session.public_id, "user_id": str(session.owner_id), "status": "COMPLETED",
                "created_at": _epoch(job.created_at), "messages": [], "content": ""})
            run["messages"].append({"role": message.role, "content": message.content,
                                    "created_at": _epoch(message.created_at)})
            if message.role == "user":
                run["input"] = {"input_content": message.content}
            else:
                run["content"] = message.content
        ordered = list(runs.values())
        return ordered[-limit:] if limit else ordered

    @staticmethod
    def _paused_run(job: Job) -> dict[str, Any] | None:
        """A run paused in AgentOS, whole as agno stored it (its messages, tools and
        requirements), so its continue endpoint finds it and `RunOutput.from_dict`
        gives agno back what it needs to go on. agno leaves paused runs out of the
        history it builds. A worker's paused run is not offered: it continues through
        the Opie API (POST jobs/<id>/actions/), in a worker."""
        if (job.input or {}).get("source") != "agentos":
            return None
        pause = RunPause.objects.filter(job=job, resumed_at__isnull=True).order_by("-number").first()
        return {**pause.run_state["run"], "status": RunStatus.paused.value} if pause is not None else None

    def _as_dict(self, session: Any, runs_limit: int | None = None, include_runs: bool = True) -> dict[str, Any]:
        return {
            "session_id": session.public_id, "session_type": "agent", "agent_id": session.agent.public_id,
            "user_id": str(session.owner_id), "session_data": {"session_name": session.title},
            "agent_data": {"agent_id": session.agent.public_id, "name": session.agent.name},
            "metadata": None, "summary": None, "created_at": _epoch(session.created_at),
            "updated_at": _epoch(session.updated_at),
            "runs": self._runs(session, runs_limit) if include_runs else [],
        }

    def _session_dict(self, session_id: str, runs_limit: int | None) -> dict[str, Any] | None:
        session = self._owned().filter(public_id=session_id).first()
        return self._as_dict(session, runs_limit) if session is not None else None

    def _sessions(self, agent_id: str | None, name: str | None, limit: int | None, page: int | None,
                  sort_order: str | None, include_runs: bool) -> tuple[list[dict[str, Any]], int]:
        sessions = self._owned()
        if agent_id:
            sessions = sessions.filter(agent__public_id=agent_id)
        if name:
            sessions = sessions.filter(title__icontains=name)
        sessions = sessions.order_by("created_at" if sort_order == "asc" else "-created_at", "id")
        total = sessions.count()
        if limit:
            start = (max(page or 1, 1) - 1) * limit
            sessions = sessions[start:start + limit]
        return [self._as_dict(s, include_runs=include_runs) for s in sessions], total

    def _upsert_session(self, session: Any) -> None:
        """A new AgentOS session becomes a ChatSession of the user; an existing one
        keeps its owner and agent (only the name can change)."""
        user = self._user()
        name = ((session.session_data or {}).get("session_name") or "")[:200]
        existing = ChatSession.objects.filter(public_id=session.session_id).first()
        if existing is not None:
            if existing.owner_id == user.pk and name and name != existing.title:
                with transaction.atomic():
                    ChatSession.objects.filter(pk=existing.pk).update(title=name)
                    session_changed(session_id=existing.public_id)
            return
        agent = agent_get_visible(user=user, agent_id=session.agent_id)
        session_create(user=user, agent=agent, title=name, session_id=session.session_id)

    def _rename(self, session_id: str, name: str) -> bool:
        with transaction.atomic():
            renamed = ChatSession.objects.filter(owner=self._user(), public_id=session_id).update(title=name[:200])
            session_changed(session_id=session_id)
        return renamed > 0

    def _delete(self, session_ids: list[str]) -> int:
        """The number of sessions deleted (their messages and jobs go with them)."""
        with transaction.atomic():
            sessions = self._owned().filter(public_id__in=session_ids)
            deleted = list(sessions.values_list("public_id", flat=True))
            sessions.delete()
            for public_id in deleted:
                session_changed(session_id=public_id)
        return len(deleted)

    def _record_run(self, run: Any, session_id: str) -> None:
        """Paused and finished runs are recorded; agno saves a run again as it goes.
        A paused run is a `requires_action` job with its stored run and actions; when
        AgentOS's continue endpoint finishes it, the same job ends."""
        if run.status not in (RunStatus.completed, RunStatus.error, RunStatus.paused):
            return
        session = self._owned().filter(public_id=session_id).first()
        if session is None:
            logger.warning("AgentOS run %s for unknown session %s not recorded", run.run_id, session_id)
            return
        message = run.input.input_content if run.input is not None else ""
        message = message if isinstance(message, str) else str(message)
        if run.status == RunStatus.paused:
            message_record_paused(user=session.owner, agent=session.agent, session=session, run_id=run.run_id,
                                  message=message, run_state=pause_state(run, []), actions=pause_actions(run),
                                  calls=_decided_calls(run))
            return
        reply = run.content if isinstance(run.content, str) else str(run.content or "")
        metrics = run.metrics.to_dict() if run.metrics is not None else {}
        tools = [{"id": t.tool_call_id, "name": t.tool_name, "arguments": t.tool_args or {}, "result": t.result}
                 for t in run.tools or []]
        message_record_end(user=session.owner, agent=session.agent, session=session, run_id=run.run_id,
                           message=message, reply=reply if run.status == RunStatus.completed else None,
                           tool_calls=tools, metrics=metrics, error=reply, calls=_decided_calls(run))


def _decided_calls(run: Any) -> dict[str, dict[str, Any]]:
    """The decisions a continued run's tool calls carry, by tool call id, as
    `apps.jobs.actions.pause_settle` takes them: agno marks a confirmed or
    rejected call `confirmed`, and an answered one `answered` with its values."""
    calls: dict[str, dict[str, Any]] = {}
    for tool in run.tools or []:
        if not tool.tool_call_id:
            continue
        if tool.answered:
            calls[tool.tool_call_id] = {"values": {f.name: f.value for f in tool.user_input_schema or []}}
        elif tool.confirmed is not None:
            calls[tool.tool_call_id] = {"approved": bool(tool.confirmed), "note": tool.confirmation_note or "",
                                        "arguments": dict(tool.tool_args or {}) if tool.confirmed else None}
    return calls


def _unsupported(name: str) -> Any:
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if name in _LISTINGS:
            return [] if kwargs.get("deserialize", True) else ([], 0)
        if name in _PAIRS:
            return _PAIRS[name]
        return [] if name in _LISTS else None

    method.__name__ = name
    return method


for _name in DjangoSessionDb.__abstractmethods__:
    setattr(DjangoSessionDb, _name, _unsupported(_name))
DjangoSessionDb.__abstractmethods__ = frozenset()
