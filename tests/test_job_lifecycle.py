"""The async contract: idempotency, per-session multitasking, cancel, deadlines, listing, rate limit."""
from __future__ import annotations

import time

import pytest

from apps.chat.models import ChatMessage
from apps.jobs.lifecycle import job_claim
from apps.jobs.models import Job
from apps.jobs.sweeper import jobs_sweep
from tests.factories import make_agent, make_token
from workers.execution import execute_message_job

pytestmark = pytest.mark.django_db


def send(api, headers=None, **payload):
    return api.post("/api/v1/agentos/send-message/", payload, content_type="application/json",
                    headers=headers or {})


def test_same_idempotency_key_and_body_replays_the_first_response(api, agent):
    first = send(api, {"Idempotency-Key": "k1"}, agent_id=agent.public_id, message="once")
    again = send(api, {"Idempotency-Key": "k1"}, agent_id=agent.public_id, message="once")

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1 and ChatMessage.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_a_409(api, agent):
    send(api, {"Idempotency-Key": "k2"}, agent_id=agent.public_id, message="one")

    response = send(api, {"Idempotency-Key": "k2"}, agent_id=agent.public_id, message="two")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1


def test_idempotency_keys_are_per_user(api, other_api, other_user):
    public = make_agent(other_user, visibility="public")

    mine = send(api, {"Idempotency-Key": "shared"}, agent_id=public.public_id, message="hi").json()
    theirs = send(other_api, {"Idempotency-Key": "shared"}, agent_id=public.public_id, message="hi").json()

    assert mine["job_id"] != theirs["job_id"]


def test_a_refused_request_does_not_burn_its_idempotency_key(api, agent):
    refused = send(api, {"Idempotency-Key": "k3"}, agent_id=agent.public_id, message="")
    accepted = send(api, {"Idempotency-Key": "k3"}, agent_id=agent.public_id, message="fixed")

    assert refused.status_code == 400 and accepted.status_code == 202


def test_an_overlong_idempotency_key_is_refused(api, agent):
    response = send(api, {"Idempotency-Key": "x" * 256}, agent_id=agent.public_id, message="hi")

    assert response.json()["error"]["code"] == "invalid_idempotency_key"


def test_reject_refuses_a_message_while_the_session_is_busy(api, agent):
    first = send(api, agent_id=agent.public_id, message="one").json()

    response = send(api, agent_id=agent.public_id, message="two", session_id=first["session_id"],
                    multitask="reject")

    assert response.status_code == 409 and response.json()["error"]["code"] == "session_busy"
    assert Job.objects.count() == 1


def test_interrupt_cancels_the_earlier_job_and_runs_the_new_one(api, agent):
    first = send(api, agent_id=agent.public_id, message="one").json()

    second = send(api, agent_id=agent.public_id, message="two", session_id=first["session_id"],
                  multitask="interrupt").json()

    assert Job.objects.get(public_id=first["job_id"]).status == "cancelled"
    assert execute_message_job(Job.objects.get(public_id=second["job_id"]).pk) == "succeeded"
    replies = ChatMessage.objects.filter(role="assistant").values_list("content", flat=True)
    assert list(replies) == ["Echo #1: two"], "the cancelled message got no reply and is not history"


def test_cancelling_a_queued_job_means_it_never_starts(api, agent):
    job_id = send(api, agent_id=agent.public_id, message="never").json()["job_id"]

    response = api.post(f"/api/v1/agentos/jobs/{job_id}/cancel/")

    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert execute_message_job(Job.objects.get(public_id=job_id).pk) == "skipped"
    assert not ChatMessage.objects.filter(role="assistant").exists()
    assert Job.objects.get(public_id=job_id).attempts == 0


def test_cancelling_a_finished_job_is_a_409(api, agent):
    job_id = send(api, agent_id=agent.public_id, message="done").json()["job_id"]
    execute_message_job(Job.objects.get(public_id=job_id).pk)

    response = api.post(f"/api/v1/agentos/jobs/{job_id}/cancel/")

    assert response.status_code == 409 and response.json()["error"]["code"] == "job_finished"


def test_a_running_job_cancelled_before_its_reply_is_written_writes_none(api, agent):
    from apps.jobs.lifecycle import job_succeed_message

    job_id = send(api, agent_id=agent.public_id, message="slow").json()["job_id"]
    claimed = job_claim(job_id=Job.objects.get(public_id=job_id).pk, worker="w")
    api.post(f"/api/v1/agentos/jobs/{job_id}/cancel/")

    assert job_succeed_message(job=claimed, content="late", tool_calls=[], metrics={}) is None
    assert Job.objects.get(public_id=job_id).status == "cancelled"
    assert not ChatMessage.objects.filter(role="assistant").exists()


def test_a_job_past_its_deadline_expires(api, agent):
    job_id = send(api, agent_id=agent.public_id, message="too late", timeout=1).json()["job_id"]
    time.sleep(1.1)

    jobs_sweep()

    job = Job.objects.get(public_id=job_id)
    assert job.status == "expired" and job.error_code == "deadline_exceeded"
    assert execute_message_job(job.pk) == "skipped"


def test_a_timeout_over_the_cap_is_refused(api, agent, settings):
    response = send(api, agent_id=agent.public_id, message="hi", timeout=settings.AGENTOS_JOB_TIMEOUT_MAX + 1)

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_timeout"


def test_jobs_are_listed_newest_first_with_filters_and_a_cursor(api, other_api, user, agent, other_user):
    other_agent = make_agent(user, name="Other")
    ids = [send(api, agent_id=agent.public_id, message=f"m{i}").json()["job_id"] for i in range(3)]
    send(api, agent_id=other_agent.public_id, message="x")
    send(other_api, agent_id=make_agent(other_user).public_id, message="not yours")
    execute_message_job(Job.objects.get(public_id=ids[0]).pk)

    page1 = api.get(f"/api/v1/agentos/jobs/?agent_id={agent.public_id}&limit=2").json()
    page2 = api.get(f"/api/v1/agentos/jobs/?agent_id={agent.public_id}&limit=2&cursor={page1['next']}").json()
    done = api.get("/api/v1/agentos/jobs/?status=succeeded").json()

    assert [j["job_id"] for j in page1["jobs"] + page2["jobs"]] == list(reversed(ids))
    assert page2["next"] is None
    assert [j["job_id"] for j in done["jobs"]] == [ids[0]]
    assert len(api.get("/api/v1/agentos/jobs/").json()["jobs"]) == 4
    assert api.get("/api/v1/agentos/jobs/?status=bogus").status_code == 400


def test_job_creation_is_rate_limited_per_token_with_retry_after(api, client, user, agent, settings):
    settings.AGENTOS_RATE_LIMIT_PER_MINUTE = 3
    statuses = [send(api, agent_id=agent.public_id, message=f"m{i}").status_code for i in range(4)]
    limited = send(api, agent_id=agent.public_id, message="again")
    fresh_token = client.post("/api/v1/agentos/send-message/", {"agent_id": agent.public_id, "message": "hi"},
                              content_type="application/json",
                              headers={"Authorization": f"Bearer {make_token(user)}"})

    assert statuses == [202, 202, 202, 429]
    assert limited.json()["error"]["code"] == "rate_limited" and int(limited["Retry-After"]) >= 1
    assert fresh_token.status_code == 202, "the limit is per token"
    assert Job.objects.count() == 4
