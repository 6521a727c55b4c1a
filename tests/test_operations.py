"""Operator tools: agentos_test, /readyz."""
from __future__ import annotations

import io
import time

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.agents.models import Agent
from apps.chat.models import ChatMessage, ChatSession
from apps.chat.selectors import session_list
from apps.chat.services import session_create
from apps.jobs.models import Job
from apps.knowledge.models import Document
from apps.knowledge.services import document_upload, kb_attach, kb_create
from tests.factories import make_agent

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def agentos_test(*args: str) -> tuple[str, str | None]:
    """The report (stdout) and the failure message, or None when every check passed."""
    out = io.StringIO()
    try:
        call_command("agentos_test", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), None


def report_rows(output: str) -> dict[str, tuple[str, float, str]]:
    """The report table as {check: (PASS|FAIL, ms, detail)}; a folded detail is joined back."""
    rows: dict[str, tuple[str, float, str]] = {}
    last = None
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) != 4:
            continue
        name, result, ms, detail = cells
        if result in ("PASS", "FAIL"):
            rows[name] = (result, float(ms), detail)
            last = name
        elif not name and last:
            result, ms, before = rows[last]
            rows[last] = (result, ms, before + detail)
    return rows


def history(*users) -> dict[int, list]:
    """What each user's session list shows, plus their jobs and messages."""
    return {u.pk: [list(session_list(user=u).values_list("public_id", "title", "updated_at")),
                   Job.objects.filter(owner=u).count(), ChatMessage.objects.filter(session__owner=u).count()]
            for u in users}


PARIS = "The Eiffel Tower stands in Paris on the Champ de Mars and was finished in 1889."


def ready_knowledge_base(user, agent):
    """A knowledge base attached to `agent` with one document the knowledge worker embedded."""
    kb = kb_create(user=user, name="Notes")
    document, _ = document_upload(user=user, kb=kb, name="paris.txt", data=PARIS.encode())
    deadline = time.monotonic() + 90
    while Document.objects.get(pk=document.pk).status != Document.Status.READY:
        assert time.monotonic() < deadline, "the knowledge worker did not embed the document"
        time.sleep(0.2)
    kb_attach(user=user, kb=kb, agent=agent)
    return kb


def test_agentos_test_passes_and_leaves_every_users_history_as_it_was(start_worker, user, other_user):
    start_worker(queues="agents,knowledge")
    mine, theirs = make_agent(user, name="Mine"), make_agent(other_user, name="Theirs")
    ready_knowledge_base(user, mine)
    session_create(user=user, agent=mine, title="an earlier chat")
    before = history(user, other_user)

    output, failure = agentos_test("--timeout", "20")

    rows = report_rows(output)
    assert failure is None and "all 9 checks passed" in output
    assert [name for name, (result, _, _) in rows.items() if result == "PASS"] == list(rows) and len(rows) == 9
    for agent in (mine, theirs):
        result, ms, detail = rows[f"agent {agent.public_id} ({agent.name})"]
        assert ms > 0 and "replied via job" in detail
    assert rows["knowledge search"][2].startswith("1 attached knowledge base(s): 1 chunk(s), best score")
    assert rows["embedding model"][2].endswith("384 dimensions")
    assert history(user, other_user) == before  # each owner was asked as, and nothing stayed


def test_agentos_test_without_a_worker_fails_and_says_the_worker_is_missing(user):
    agent = make_agent(user)

    output, failure = agentos_test("--timeout", "1")

    rows = report_rows(output)
    assert failure is not None and "no worker consumes agents" in failure
    assert rows["worker on 'agents'"][0] == "FAIL" and "no worker consumes agents" in rows["worker on 'agents'"][2]
    assert rows[f"agent {agent.public_id} (Helper)"][0] == "FAIL"
    assert "not asked: no worker consumes 'agents'" in rows[f"agent {agent.public_id} (Helper)"][2]
    assert rows["worker on 'knowledge'"][0] == "FAIL" and rows["database"][0] == "PASS"
    assert not ChatSession.objects.exists()  # nothing was sent that could only wait


def test_agentos_test_with_a_worker_names_the_broken_agents_and_passes_the_good_one(start_worker, user):
    start_worker(queues="agents,knowledge")
    good = make_agent(user, name="Good")
    unknown_tool = make_agent(user, name="UnknownTool")
    Agent.objects.filter(pk=unknown_tool.pk).update(tools=["calculator", "no_such_tool"])  # past the API's check
    unreachable = make_agent(user, name="Unreachable", model_provider="openai_like", model_id="m", tools=[],
                             model_options={"base_url": "http://127.0.0.1:9/v1"})
    before = history(user)

    output, failure = agentos_test("--timeout", "20")

    rows = report_rows(output)
    assert failure is not None and "2 of 10 checks failed" in failure
    assert rows[f"agent {good.public_id} (Good)"][0] == "PASS"
    assert "replied via job" in rows[f"agent {good.public_id} (Good)"][2]
    result, _, detail = rows[f"agent {unknown_tool.public_id} (UnknownTool)"]
    assert result == "FAIL" and "unknown_tool" in detail and "no_such_tool" in detail
    result, _, detail = rows[f"agent {unreachable.public_id} (Unreachable)"]
    assert result == "FAIL" and " failed: " in detail  # the worker ran it and the job failed
    assert unknown_tool.public_id in failure and unreachable.public_id in failure and good.public_id not in failure
    assert history(user) == before


def test_agentos_test_with_agent_id_asks_only_that_agent(start_worker, user, other_user):
    start_worker(queues="agents,knowledge")
    asked, other = make_agent(user, name="Asked"), make_agent(other_user, name="NotAsked")

    output, failure = agentos_test("--agent-id", asked.public_id, "--timeout", "20")

    rows = report_rows(output)
    assert failure is None and "all 8 checks passed" in output
    assert [name for name in rows if name.startswith("agent ")] == [f"agent {asked.public_id} (Asked)"]
    assert other.public_id not in output
    assert all(ms >= 0 for _, ms, _ in rows.values()) and rows[f"agent {asked.public_id} (Asked)"][1] > 0


def test_agentos_test_with_user_id_asks_that_users_agents_as_that_user(start_worker, user, other_user):
    start_worker(queues="agents,knowledge")
    mine, theirs = make_agent(user, name="Mine"), make_agent(other_user, name="Theirs")
    shared = make_agent(other_user, name="Shared", visibility="shared", shared_with=[user.username])
    before = history(user, other_user)

    output, failure = agentos_test("--user-id", str(user.pk), "--timeout", "20")

    rows = report_rows(output)
    assert failure is None and "all 9 checks passed" in output
    assert [n for n in rows if n.startswith("agent ")] == [f"agent {mine.public_id} (Mine)",
                                                           f"agent {shared.public_id} (Shared)"]
    assert theirs.public_id not in output
    assert history(user, other_user) == before


def test_agentos_test_refuses_an_unknown_agent(user):
    with pytest.raises(CommandError, match="no agent"):
        call_command("agentos_test", "--agent-id", "agent-000000000000", stdout=io.StringIO())


def test_readyz_needs_a_worker_on_every_queue(live_server, start_worker, settings):
    settings.AGENTOS_READY_QUEUES = ["agents", "sync"]
    before = httpx.get(f"{live_server.url}/readyz")
    start_worker(queues="agents,sync")
    after = httpx.get(f"{live_server.url}/readyz")

    assert before.status_code == 503 and before.json()["checks"]["database"]["ok"]
    assert not before.json()["checks"]["workers"]["ok"]
    assert after.status_code == 200 and after.json()["ready"] is True
    assert httpx.get(f"{live_server.url}/healthz").json() == {"status": "ok", "database": True}


def test_readyz_by_default_also_needs_the_knowledge_worker(live_server, start_worker):
    start_worker(queues="agents,sync,webhooks")
    before = httpx.get(f"{live_server.url}/readyz")
    start_worker("knowledge", queues="knowledge", concurrency=1)
    after = httpx.get(f"{live_server.url}/readyz")

    assert before.status_code == 503
    assert before.json()["checks"]["workers"]["detail"].endswith("no worker consumes knowledge")
    assert after.status_code == 200 and after.json()["ready"] is True
