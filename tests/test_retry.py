"""Dead letters and retry: a failed job says whether it is `retryable`, and
POST jobs/<id>/retry/ runs a retryable one again as a new job linked to it.

The jobs that have to run do so on real worker processes; the provider that
fails and then recovers is a real OpenAI-compatible HTTP server (the network
edge, tests/fake_openai.py), the webhook receiver a real one."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.utils import timezone

from apps.chat.models import ChatMessage
from apps.events.models import JobEvent
from apps.jobs.models import Job
from apps.jobs.services import message_send
from apps.knowledge.models import Document
from apps.knowledge.services import document_upload, kb_create
from tests.conftest import wait_for_job
from tests.factories import make_agent, make_token, make_user
from tests.fake_openai import FakeOpenAI
from tests.webhook_receiver import Receiver

API = "/api/v1/agentos/"


def failed_job(user: Any, agent: Any, message: str = "what now?", code: str = "model_error", **fields: Any) -> Job:
    """A message job as a worker leaves it when its run failed with `code`."""
    job = message_send(user=user, agent=agent, message=message)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED, error_code=code, error_message="it broke",
                                         attempts=1, finished_at=timezone.now(), **fields)
    return Job.objects.get(pk=job.pk)


def retry(client: Any, job_id: str, key: str | None = None) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(f"{API}jobs/{job_id}/retry/", content_type="application/json", **headers)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retry_of_a_failed_job_is_one_new_linked_job_with_the_same_input_and_its_own_webhook(
        http, start_worker, user, settings):
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = True
    start_worker(queues="agents,webhooks", AGENTOS_WEBHOOK_ALLOW_PRIVATE="1")
    question = "is the provider back?"
    # the provider answers 500 to the first run (three tries: the client retries twice), then recovers
    with FakeOpenAI(script=["500", "500", "500", "ok"]) as fake, Receiver([200]) as receiver:
        agent = make_agent(user, model_provider="openai_like", model_id="gpt-retry", tools=[],
                           model_options={"base_url": fake.url, "timeout": 1})
        sent = http.post("send-message/", json={"agent_id": agent.public_id, "message": question,
                                                "callback_url": receiver.url + "/hook"}).json()
        failed = wait_for_job(http, sent["job_id"])
        dead_letters = http.get("jobs/", params={"status": "failed"}).json()["jobs"]

        first = http.post(f"jobs/{failed['job_id']}/retry/", headers={"Idempotency-Key": "retry-1"})
        again = http.post(f"jobs/{failed['job_id']}/retry/", headers={"Idempotency-Key": "retry-1"})
        unkeyed = http.post(f"jobs/{failed['job_id']}/retry/")
        retried = wait_for_job(http, first.json()["job_id"])
        hooks = receiver.wait_for(2)
        provider_saw = fake.requests[-1]["body"]["messages"]

    assert failed["status"] == "failed" and failed["error"]["code"] == "model_error", failed
    assert failed["retryable"] is True and failed["retry_of"] is None
    assert [(j["job_id"], j["retryable"]) for j in dead_letters] == [(failed["job_id"], True)]
    assert first.status_code == 202, first.text
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["job_id"] == first.json()["job_id"], "the same key answers with the same new job"
    assert unkeyed.status_code == 409 and unkeyed.json()["error"]["code"] == "job_already_retried"
    assert list(Job.objects.filter(retry_of__public_id=failed["job_id"]).values_list("public_id", flat=True)) == [
        first.json()["job_id"]], "one new job"
    accepted = first.json()
    assert (accepted["retry_of"], accepted["kind"], accepted["agent_id"], accepted["session_id"]) == (
        failed["job_id"], "message", agent.public_id, failed["session_id"])
    assert JobEvent.objects.get(job__public_id=accepted["job_id"], seq=1).data["retry_of"] == failed["job_id"]
    # it ran: the recovered provider answered, and was asked the question once
    assert retried["status"] == "succeeded", retried
    assert retried["retry_of"] == failed["job_id"] and retried["retryable"] is False
    assert [m["content"] for m in provider_saw if m["role"] == "user"] == [question]
    transcript = http.get(f"sessions/{failed['session_id']}/").json()["messages"]
    assert [(m["role"], m["content"], m["job_id"]) for m in transcript] == [
        ("user", question, failed["job_id"]),  # the failed attempt keeps its message
        ("user", question, retried["job_id"]),
        ("assistant", retried["result"]["content"], retried["job_id"])]
    # each job its own webhook: the failure's, then the retry's
    events = {json.loads(h["body"])["data"]["job_id"]: json.loads(h["body"]) for h in hooks}
    assert len(hooks) == 2 and set(events) == {failed["job_id"], retried["job_id"]}
    assert events[failed["job_id"]]["type"] == "job.failed"
    assert events[retried["job_id"]]["type"] == "job.succeeded"
    assert events[retried["job_id"]]["data"]["retry_of"] == failed["job_id"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_retry_queued_behind_a_newer_message_of_its_session_runs_after_it(http, start_worker, user):
    start_worker()
    agent = make_agent(user, model_options={"latency_ms": 1000})
    sent = http.post("send-message/", json={"agent_id": agent.public_id, "message": "/fail boom"}).json()
    failed = wait_for_job(http, sent["job_id"])
    newer = http.post("send-message/", json={"agent_id": agent.public_id, "message": "newer",
                                             "session_id": sent["session_id"]}).json()
    retried = http.post(f"jobs/{failed['job_id']}/retry/").json()

    finished = [wait_for_job(http, job_id) for job_id in (newer["job_id"], retried["job_id"])]

    assert failed["retryable"] is True
    assert [j["status"] for j in finished] == ["succeeded", "failed"]  # `/fail` fails again: it is the same input
    assert finished[1]["retry_of"] == failed["job_id"] and finished[1]["error"]["code"] == "model_error"
    newer_row, retry_row = Job.objects.get(public_id=newer["job_id"]), Job.objects.get(public_id=retried["job_id"])
    assert retry_row.started_at >= newer_row.finished_at, "the retry waited for the newer message"
    transcript = http.get(f"sessions/{sent['session_id']}/").json()["messages"]
    assert [(m["role"], m["content"]) for m in transcript] == [
        ("user", "/fail boom"), ("user", "newer"), ("assistant", "Echo #1: newer"), ("user", "/fail boom")]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_job_that_failed_because_its_agent_was_disabled_is_not_retryable(http, start_worker, user):
    agent = make_agent(user)
    sent = http.post("send-message/", json={"agent_id": agent.public_id, "message": "anyone there?"}).json()
    assert http.patch(f"agents/{agent.public_id}/", json={"enabled": False}).status_code == 200
    start_worker()  # only now: the queued job meets a disabled agent

    failed = wait_for_job(http, sent["job_id"])
    refused = http.post(f"jobs/{failed['job_id']}/retry/")

    assert failed["status"] == "failed" and failed["error"]["code"] == "agent_unavailable", failed
    assert failed["retryable"] is False
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_not_retryable"
    assert not Job.objects.filter(retry_of__public_id=failed["job_id"]).exists()


@pytest.mark.django_db
def test_someone_elses_failed_job_cannot_be_retried(other_api, user, agent):
    job = failed_job(user, agent)

    response = retry(other_api, job.public_id)

    assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
    assert not job.retries.exists()


@pytest.mark.django_db
def test_only_a_failed_job_is_retried(api, user, agent):
    queued = message_send(user=user, agent=agent, message="still waiting")

    response = retry(api, queued.public_id)

    assert response.status_code == 409 and response.json()["error"]["code"] == "job_not_failed"
    assert api.get(f"{API}jobs/{queued.public_id}/").json()["retryable"] is False


@pytest.mark.django_db
def test_a_retryable_failure_whose_agent_is_now_disabled_is_refused(api, user, agent):
    job = failed_job(user, agent)
    api.patch(f"{API}agents/{agent.public_id}/", {"enabled": False}, content_type="application/json")

    response = retry(api, job.public_id)

    assert response.status_code == 409 and response.json()["error"]["code"] == "agent_unavailable"
    assert ChatMessage.objects.filter(session=job.session).count() == 1, "no partial write"


@pytest.mark.django_db
def test_a_retry_keeps_priority_callback_and_gets_a_fresh_deadline(api, user, agent, settings):
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = True
    job = failed_job(user, agent, code="attempts_exhausted", priority=Job.Priority.HIGH,
                     callback_url="http://127.0.0.1:9/hook", deadline_at=timezone.now())

    response = retry(api, job.public_id)

    new = Job.objects.get(public_id=response.json()["job_id"])
    assert response.status_code == 202, response.content
    assert (new.retry_of_id, new.priority, new.callback_url, new.session_id, new.owner_id) == (
        job.pk, Job.Priority.HIGH, "http://127.0.0.1:9/hook", job.session_id, user.pk)
    assert new.deadline_at > job.deadline_at and new.status == Job.Status.QUEUED and new.pk > job.pk


@pytest.mark.django_db
def test_a_retried_ingest_runs_its_document_again_and_a_deleted_one_is_refused(api, user):
    kb = kb_create(user=user, name="Notes")
    document, _ = document_upload(user=user, kb=kb, name="a.txt", data=b"The Eiffel Tower is in Paris.")
    Job.objects.filter(pk=document.job_id).update(status=Job.Status.FAILED, error_code="attempts_exhausted")
    Document.objects.filter(pk=document.pk).update(status=Document.Status.FAILED, error="ingestion failed")
    old = Job.objects.get(pk=document.job_id)
    gone, _ = document_upload(user=user, kb=kb, name="b.txt", data=b"Soon deleted.")
    Job.objects.filter(pk=gone.job_id).update(status=Job.Status.FAILED, error_code="attempts_exhausted")
    gone_job_id = Job.objects.get(pk=gone.job_id).public_id
    gone.delete()

    response = retry(api, old.public_id)
    refused = retry(api, gone_job_id)

    assert response.status_code == 202, response.content
    new = Job.objects.get(public_id=response.json()["job_id"])
    assert (new.kind, new.input, new.retry_of_id) == ("ingest", old.input, old.pk)
    document.refresh_from_db()
    assert (document.job_id, document.status, document.error) == (new.pk, "pending", "")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "document_deleted"


@pytest.mark.django_db
def test_a_sync_that_found_another_running_is_retried_with_its_input(client):
    staff = make_user("root", is_staff=True)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {make_token(staff)}"
    job = Job.objects.create(owner=staff, kind=Job.Kind.SYNC, status=Job.Status.FAILED,
                             error_code="sync_in_progress", input={"agent_id": None, "user_id": 7, "dry_run": True})

    response = retry(client, job.public_id)

    assert response.status_code == 202, response.content
    assert Job.objects.get(public_id=response.json()["job_id"]).input == job.input


@pytest.mark.django_db
def test_the_admin_action_retries_only_the_retryable_failed_jobs(admin_client, user, agent):
    provider = failed_job(user, agent, "a", code="model_error")
    lost = failed_job(user, agent, "b", code="attempts_exhausted")
    refused = failed_job(user, agent, "c", code="agent_unavailable")
    queued = message_send(user=user, agent=agent, message="d")
    done_before = failed_job(user, agent, "e", code="model_error")
    Job.objects.create(owner=user, kind=Job.Kind.MESSAGE, status=Job.Status.QUEUED, retry_of=done_before)
    selected = [provider, lost, refused, queued, done_before]

    response = admin_client.post("/admin/jobs/job/", {"action": "retry_failed",
                                                      "_selected_action": [j.pk for j in selected]}, follow=True)
    listed = admin_client.get("/admin/jobs/job/", {"error_code": "model_error",
                                                   "finished_at__gte": "2000-01-01 00:00:00+00:00"})

    assert response.status_code == 200
    assert "Retried 2 failed jobs; skipped 3" in response.content.decode()
    retried = Job.objects.filter(retry_of__in=[provider, lost])
    assert sorted(retried.values_list("retry_of_id", flat=True)) == sorted([provider.pk, lost.pk])
    assert all(job.owner_id == user.pk for job in retried), "a retry belongs to the job's owner"
    assert not Job.objects.filter(retry_of__in=[refused, queued]).exists()
    assert listed.status_code == 200 and provider.public_id in listed.content.decode()
    assert lost.public_id not in listed.content.decode()
