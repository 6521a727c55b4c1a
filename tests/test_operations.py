"""Operator tools: agentos_test, /readyz."""
from __future__ import annotations

import io

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.factories import make_agent

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def agentos_test(*args):
    out = io.StringIO()
    call_command("agentos_test", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_agentos_test_passes_on_a_working_deployment(start_worker, user, other_user):
    start_worker(queues="agents")
    mine, theirs = make_agent(user, name="Mine"), make_agent(other_user, name="Theirs")

    output = agentos_test("--user-id", str(user.pk), "--timeout", "20")

    assert "all 6 checks passed" in output
    assert mine.public_id in output and theirs.public_id not in output
    assert output.count("PASS") == 6 and "replied via job" in output


def test_agentos_test_fails_loudly_without_a_worker_and_on_a_broken_agent(user):
    broken = make_agent(user, model_provider="openai_like", model_id="m", tools=[],
                        model_options={"base_url": "http://127.0.0.1:9/v1"})

    with pytest.raises(CommandError, match="checks failed"):
        agentos_test("--agent-id", broken.public_id, "--timeout", "1")


def test_agentos_test_refuses_an_unknown_agent(user):
    with pytest.raises(CommandError, match="no agent"):
        agentos_test("--agent-id", "agent-000000000000")


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
