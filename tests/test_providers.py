"""Real provider code paths against an OpenAI-compatible server on 127.0.0.1."""
from __future__ import annotations

import pytest

from apps.chat.models import ChatMessage
from apps.jobs.services import message_send
from tests.conftest import wait_for_job
from tests.factories import make_agent
from tests.fake_openai import FakeOpenAI
from workers.execution import execute_message_job


@pytest.fixture
def fake_llm():
    with FakeOpenAI() as server:
        yield server


@pytest.mark.django_db
def test_openai_provider_sends_history_and_key_and_records_usage(user, settings, fake_llm):
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake_llm.url, "sk-test-key"
    agent = make_agent(user, model_provider="openai", model_id="gpt-test", tools=[],
                       instructions="You are terse.")
    first = message_send(user=user, agent=agent, message="first question")
    execute_message_job(first.pk)
    second = message_send(user=user, agent=agent, message="second question", session=first.session)

    assert execute_message_job(second.pk) == "succeeded"

    request = fake_llm.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-test-key"
    assert request["body"]["model"] == "gpt-test"
    sent = [(m["role"], m["content"]) for m in request["body"]["messages"]]
    assert sent[0][0] in ("system", "developer") and "You are terse." in sent[0][1]
    assert sent[1:] == [("user", "first question"),
                        ("assistant", "fake-llm heard 'first question' in 2 messages"),
                        ("user", "second question")]
    reply = ChatMessage.objects.get(job=second, role="assistant")
    assert reply.content == "fake-llm heard 'second question' in 4 messages"
    assert reply.metrics["input_tokens"] == 11 and reply.metrics["output_tokens"] == 7


@pytest.mark.django_db
def test_openai_like_provider_uses_the_agents_base_url(user, settings, fake_llm):
    settings.OPENAI_LIKE_API_KEY = "local-key"
    agent = make_agent(user, model_provider="openai_like", model_id="llama", tools=[],
                       model_options={"base_url": fake_llm.url})
    job = message_send(user=user, agent=agent, message="hola")

    execute_message_job(job.pk)

    assert fake_llm.requests[-1]["headers"]["authorization"] == "Bearer local-key"
    assert [m["role"] for m in fake_llm.requests[-1]["body"]["messages"]] == ["system", "user"]
    assert ChatMessage.objects.get(job=job, role="assistant").content.startswith("fake-llm heard 'hola'")


@pytest.mark.django_db
def test_a_provider_answer_with_nothing_in_it_fails_the_job_with_no_reply(user, settings):
    settings.OPENAI_LIKE_API_KEY = "local-key"
    with FakeOpenAI(script=["empty"]) as server:
        agent = make_agent(user, model_provider="openai_like", model_id="llama", tools=[],
                           model_options={"base_url": server.url})
        job = message_send(user=user, agent=agent, message="anyone there?")

        assert execute_message_job(job.pk) == "failed"

    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "model_error")
    assert "empty reply" in job.error_message
    assert not ChatMessage.objects.filter(job=job, role="assistant").exists()


@pytest.mark.django_db
def test_agents_on_one_endpoint_share_one_connection_pool_made_when_they_warm_up(user, settings, fake_llm):
    from workers.pool import get_pool

    settings.OPENAI_LIKE_API_KEY = "local-key"
    spec = {"model_provider": "openai_like", "model_id": "llama", "tools": [],
            "model_options": {"base_url": fake_llm.url}}
    one, two = make_agent(user, name="one", **spec), make_agent(user, name="two", **spec)
    other = make_agent(user, name="other", **{**spec, "model_options": {"base_url": fake_llm.url + "/other"}})
    pool = get_pool()

    models = [pool.parts_for(agent).model for agent in (one, two, other)]

    assert models[0] is not models[1] and models[0].client is not None, "each agent's API client is made warm"
    assert models[0].client._client is models[1].client._client is models[0].http_client
    assert models[2].http_client is not models[0].http_client, "another endpoint, another pool"
    for agent in (one, two):
        job = message_send(user=user, agent=agent, message=f"hi {agent.name}")
        assert execute_message_job(job.pk) == "succeeded"


@pytest.mark.django_db
def test_an_unreachable_provider_fails_the_job_with_model_error(user, settings):
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = "http://127.0.0.1:9/v1", "sk"
    agent = make_agent(user, model_provider="openai", model_id="gpt-test", tools=[],
                       model_options={"timeout": 2})
    job = message_send(user=user, agent=agent, message="anyone?")

    assert execute_message_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error_code == "model_error" and not ChatMessage.objects.filter(job=job, role="assistant").exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_process_reaches_the_openai_provider(http, start_worker, user, fake_llm):
    start_worker(OPENAI_BASE_URL=fake_llm.url, OPENAI_API_KEY="sk-worker")
    agent = make_agent(user, model_provider="openai", model_id="gpt-test", tools=[])

    accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": "via worker"}).json()
    job = wait_for_job(http, accepted["job_id"])

    assert job["status"] == "succeeded", job
    assert job["result"]["content"] == "fake-llm heard 'via worker' in 2 messages"
    assert fake_llm.requests[-1]["headers"]["authorization"] == "Bearer sk-worker"
