"""Writes of the usage rollup: one statement per finished run, inside the
transaction that writes its reply, so a run is counted exactly when its reply
exists (a dropped or duplicate attempt writes neither)."""
from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any, Iterable

from django.db import connection
from django.utils import timezone

if TYPE_CHECKING:
    from apps.jobs.models import Job

_UPSERT_SQL = """
INSERT INTO usage_usagedaily AS u
       (user_id, day, agent_public_id, provider, model, runs, model_calls, tool_calls,
        input_tokens, output_tokens, duration_ms)
VALUES (%(user_id)s, %(day)s, %(agent)s, %(provider)s, %(model)s, 1, %(model_calls)s, %(tool_calls)s,
        %(input_tokens)s, %(output_tokens)s, %(duration_ms)s)
ON CONFLICT (user_id, day, agent_public_id, provider, model) DO UPDATE
   SET runs = u.runs + EXCLUDED.runs, model_calls = u.model_calls + EXCLUDED.model_calls,
       tool_calls = u.tool_calls + EXCLUDED.tool_calls, input_tokens = u.input_tokens + EXCLUDED.input_tokens,
       output_tokens = u.output_tokens + EXCLUDED.output_tokens, duration_ms = u.duration_ms + EXCLUDED.duration_ms
"""


def model_calls_of(messages: Iterable[Any] | None) -> int | None:
    """How many model responses a run had, from agno's RunOutput.messages: the
    assistant messages after the last user message (what came before it is the
    history the run was given). None when agno gave no messages."""
    if not messages:
        return None
    calls = 0
    for message in messages:
        role = getattr(message, "role", None)
        if role == "user":
            calls = 0
        elif role == "assistant" and not getattr(message, "from_history", False):
            calls += 1
    return calls or None


def _int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def usage_record(*, job: Job, metrics: dict[str, Any], tool_calls: list[Any], day: date | None = None) -> None:
    """Add one finished run to its user's day. `metrics` is the reply's metrics: the
    worker's (apps workers.execution._metrics: tokens, duration_ms, model, model_calls)
    or agno's own for a run AgentOS served (`duration` in seconds, no model). The
    provider is the agent's configured one (`openai`, `local`, ...: the price table's
    key); the model is the one the run reports, else the agent's. model_calls is the
    count of model responses when the run reports it, else 1 + the number of tool calls
    (one model call per tool round, and the answer)."""
    agent = job.agent
    duration_ms = metrics.get("duration_ms")
    if duration_ms is None and metrics.get("duration") is not None:
        duration_ms = float(metrics["duration"]) * 1000
    model_calls = _int(metrics.get("model_calls")) or 1 + len(tool_calls)
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_SQL, {
            "user_id": job.owner_id, "day": day or timezone.now().date(),
            "agent": agent.public_id if agent is not None else "",
            "provider": (agent.model_provider if agent is not None else "") or str(metrics.get("provider") or ""),
            "model": str(metrics.get("model") or (agent.model_id if agent is not None else ""))[:200],
            "model_calls": model_calls, "tool_calls": len(tool_calls),
            "input_tokens": _int(metrics.get("input_tokens")), "output_tokens": _int(metrics.get("output_tokens")),
            "duration_ms": round(float(duration_ms or 0))})
