"""The body of a message job (workers.harness claims it and logs it): run the agno
agent outside any transaction, then write its reply with the job's ending.

Errors inside an agno run do not raise (agno returns status=error), so the
outcome is read from `RunOutput.status`. The run streams: its reply's text
goes out live as `content.delta` (pub/sub only, see workers.streaming), and
the reply is written once at the end, as without streaming.

A run that pauses before a tool needing approval or input is stored with its
pending actions and the job is let go (`job_pause`); once they are decided the
job is queued again, and whichever worker claims it continues the stored run
(workers.paused) instead of starting a new one.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from agno.models.message import Message
from agno.run.base import RunStatus
from django.conf import settings
from django.db import connection

from apps import metrics
from apps.chat.selectors import run_history
from apps.events.services import job_event_append
from apps.jobs.actions import resumable_pause
from apps.jobs.lifecycle import job_end_cancelled, job_pause, job_succeed_message
from apps.jobs.models import Job
from apps.knowledge.selectors import chunks_search
from apps.tracing import job_span, traced
from apps.usage.services import model_calls_of
from workers.harness import JobFailed, job_run
from workers.paused import GatedCalls, pause_actions, pause_state, paused_run
from workers.pool import get_pool
from workers.streaming import ContentRelay, continue_streamed, run_streamed
from workers.watcher import until_written

logger = logging.getLogger(__name__)


@traced("job.retrieval")
def _sources(kb_ids: tuple[int, ...], history: list[Any]) -> list[dict[str, Any]]:
    """The chunks of the agent's knowledge bases nearest to this message."""
    if not kb_ids or not history:
        return []
    found = chunks_search(kb_ids=kb_ids, query=str(history[-1].content), limit=settings.AGENTOS_KNOWLEDGE_TOP_K)
    return [{**s, "content": s["content"][:1500]} for s in found]


def _sources_context(sources: list[dict[str, Any]]) -> str | None:
    if not sources:
        return None
    lines = [f"[{i}] ({s['document_name']}) {s['content']}" for i, s in enumerate(sources, 1)]
    return ("Answer from these sources from the user's knowledge base when they are relevant, "
            "and cite them as [n].\n<sources>\n" + "\n".join(lines) + "\n</sources>")


@traced("job.history")
def _history(job: Job) -> list[Any]:
    return [Message(role=role, content=content) for role, content in run_history(session_id=job.session_id,
                                                                                  job_id=job.pk)]


def _tool_events(job: Job, gated: GatedCalls | None = None) -> Callable[..., Any]:
    """An agno tool hook that reports each tool call as a live job event; a call a
    person approved runs through `gated`, at most once however often the run continues."""
    def hook(function_name: str, function_call: Callable[..., Any], arguments: dict[str, Any]) -> Any:
        action_id = gated.take(function_name, arguments) if gated is not None else None
        function_call = metrics.tool_counted(function_name, function_call)
        job_event_append(job=job, type="tool_call.started", data={"name": function_name, "arguments": arguments})
        started = time.perf_counter()
        # its name only: the arguments and the result may quote the conversation
        with job_span(f"execute_tool {function_name}", **{"gen_ai.operation.name": "execute_tool",
                                                          "gen_ai.tool.name": function_name}):
            if action_id is not None:
                result = gated.run(action_id, lambda: function_call(**arguments))  # type: ignore[union-attr]
            else:
                result = function_call(**arguments)
        job_event_append(job=job, type="tool_call.completed", data={
            "name": function_name, "arguments": arguments, "result": str(result)[:2000],
            "duration_ms": round((time.perf_counter() - started) * 1000, 3)})
        return result
    return hook


def _tool_calls(output: Any) -> list[dict[str, Any]]:
    calls = []
    for tool in output.tools or []:
        duration = getattr(tool.metrics, "duration", None) if tool.metrics else None
        calls.append({"id": tool.tool_call_id, "name": tool.tool_name, "arguments": tool.tool_args or {},
                      "result": tool.result, "error": bool(tool.tool_call_error),
                      "duration_ms": round(duration * 1000, 3) if duration is not None else None})
    return calls


def _metrics(output: Any, started: float) -> dict[str, Any]:
    metrics = output.metrics
    ttft = getattr(metrics, "time_to_first_token", None) if metrics else None
    return {
        "input_tokens": getattr(metrics, "input_tokens", 0) or 0,
        "output_tokens": getattr(metrics, "output_tokens", 0) or 0,
        "total_tokens": getattr(metrics, "total_tokens", 0) or 0,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "time_to_first_token_ms": round(ttft * 1000, 3) if ttft is not None else None,
        "model": output.model,
        "provider": output.model_provider,
        "model_calls": model_calls_of(output.messages),
    }


def release_connection_if_busy(in_flight: int) -> None:
    """Hold no database connection across the model call or after the run when
    others may need it. Pooled (DB_POOL_SIZE), always: closing hands it back to
    the pool for the next thread. Unpooled, only with many runs in flight (idle
    connections would exhaust PostgreSQL); with few, a new connection costs
    more than keeping it."""
    if connection.in_atomic_block:
        return
    if connection.settings_dict["OPTIONS"].get("pool") or in_flight > settings.AGENTOS_DB_CONNECTIONS_PER_WORKER:
        connection.close()


def execute_message_job(job_id: int) -> str:
    """Returns what happened, for logs: skipped | succeeded | failed | cancelled | dropped."""
    return job_run(job_id, kind=Job.Kind.MESSAGE, body=_answer, logger=logger)


def _answer(job: Job) -> str:
    """Run the agent on the session's history and write its reply with the job's ending."""
    agent = job.agent
    if agent is None or not agent.enabled:
        raise JobFailed("agent_unavailable", "The agent was deleted or disabled.")
    pool = get_pool()
    started = time.perf_counter()
    parts = pool.parts_for(agent)
    relay = ContentRelay(job.public_id, settings.AGENTOS_STREAM_INTERVAL_MS)
    ids = {"session_id": job.session.public_id, "user_id": str(job.owner_id)}
    pause = resumable_pause(job=job)
    if pause is not None:  # decided: continue the stored run where it stopped
        paused, sources = paused_run(pause)
    else:
        paused, history = None, _history(job)
        sources = _sources(parts.knowledge_ids, history)
    runner = pool.checkout(parts, user=job.owner, session_id=job.session.public_id,
                           tool_hooks=[_tool_events(job, GatedCalls(pause))],
                           context=_sources_context(sources))
    release_connection_if_busy(pool.stats.in_flight)  # the task adapter counts this job in flight
    if paused is not None:
        output = continue_streamed(runner, paused, relay=relay, **ids)
    else:
        output = run_streamed(runner, history, relay=relay, run_id=job.public_id, **ids)
    metrics.model_calls(output, before=paused)
    if output.status == RunStatus.paused:  # a tool waits for a person: store the run, let the job go
        state, actions = pause_state(output, sources), pause_actions(output)
        return until_written(lambda: job_pause(job=job, run_state=state, actions=actions))
    if output.status == RunStatus.cancelled:
        return until_written(lambda: "cancelled" if job_end_cancelled(job=job) else "dropped")
    if output.status != RunStatus.completed:
        raise JobFailed("model_error", str(output.content or "the model run failed"))
    content = output.content if isinstance(output.content, str) else str(output.content or "")
    if not content.strip() and not output.tools:
        # a stream that ended without a single chunk (a provider cut off or answering
        # nonsense) completes with nothing: that is no reply to store
        raise JobFailed("model_error", "The model returned an empty reply.")
    reply = until_written(lambda: job_succeed_message(
        job=job, content=content, tool_calls=_tool_calls(output), metrics=_metrics(output, started),
        sources=[{k: v for k, v in s.items() if k != "chunk_id"} for s in sources]))
    return "succeeded" if reply is not None else "dropped"
