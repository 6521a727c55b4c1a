"""Human in the loop through the queue, with real worker processes, PostgreSQL and Redis.

A tool whose policy is `approve` or `input` pauses the run: the job is
`requires_action` and holds no worker; a decision on `POST jobs/<id>/actions/`
queues it again and any worker continues the stored run from where it stopped.
The `local` model reaches such a tool offline with `/tool calculator 2+2`.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from apps.chat.models import ChatMessage
from apps.jobs.models import ActionDecision, Job, JobAction
from apps.jobs.sweeper import jobs_sweep
from apps.webhooks.services import webhook_secret_get_or_create
from tests.conftest import wait_for_job
from tests.factories import make_agent, make_token, make_user
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def approving_agent(user: Any, **fields: Any) -> Any:
    return make_agent(user, tools=["calculator"], tool_policies={"calculator": "approve"}, **fields)


def send(http: httpx.Client, agent: Any, message: str, **extra: Any) -> dict[str, Any]:
    answer = http.post("send-message/", json={"agent_id": agent.public_id, "message": message, **extra})
    assert answer.status_code == 202, answer.text
    return answer.json()


def wait_for_status(http: httpx.Client, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"jobs/{job_id}/").json()
        if job["status"] == status:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}, never {status}"
        time.sleep(0.05)


def decide(http: httpx.Client, job_id: str, *decisions: dict[str, Any], **headers: str) -> httpx.Response:
    return http.post(f"jobs/{job_id}/actions/", json={"decisions": list(decisions)}, headers=headers)


def test_an_approved_call_runs_with_the_edited_arguments_and_the_run_goes_on(http, start_worker, user, settings):
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = True
    start_worker(AGENTOS_WEBHOOK_ALLOW_PRIVATE="1")
    agent = approving_agent(user)
    with Receiver([200] * 5) as receiver:
        accepted = send(http, agent, "/tool calculator 2+2", callback_url=receiver.url + "/hook")
        paused = wait_for_status(http, accepted["job_id"], "requires_action")

        [action] = paused["required_action"]["actions"]
        assert action["type"] == "approve" and action["tool"] == "calculator"
        assert action["arguments"] == {"expression": "2+2"}
        assert paused["required_action"]["expires_at"]
        assert Job.objects.get(public_id=accepted["job_id"]).lease_token == ""  # holds no lease, no worker

        answer = decide(http, accepted["job_id"], {"action_id": action["id"], "approved": True,
                                                   "arguments": {"expression": "3+3"}, "note": "make it 3+3"})
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] in ("queued", "running", "succeeded")
        job = wait_for_job(http, accepted["job_id"])
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 2:
            assert time.monotonic() < deadline, receiver.requests
            time.sleep(0.05)

    assert job["status"] == "succeeded", job
    assert job["result"]["content"] == "calculator returned: 6"
    assert job["required_action"] is None
    [decision] = job["decisions"]
    assert decision["decision"] == "approved" and decision["decided_by"] == "alice"
    assert decision["arguments_before"] == {"expression": "2+2"}
    assert decision["arguments_after"] == {"expression": "3+3"}
    assert decision["note"] == "make it 3+3" and decision["staff_override"] is False
    assert JobAction.objects.get(public_id=action["id"]).executions == 1
    assert ChatMessage.objects.filter(job__public_id=accepted["job_id"], role="assistant").count() == 1
    # the signed webhooks: `job.action_required` with the job as GET shows it, then `job.succeeded`
    secret = webhook_secret_get_or_create(user=user)
    events = [Webhook(secret).verify(r["body"], r["headers"]) for r in receiver.requests]
    assert [e["type"] for e in events] == ["job.action_required", "job.succeeded"]
    assert events[0]["data"]["status"] == "requires_action"
    assert events[0]["data"]["required_action"]["actions"][0]["id"] == action["id"]


def test_a_rejected_call_is_refused_with_the_note_and_the_model_goes_on(http, start_worker, user):
    start_worker()
    agent = approving_agent(user)
    accepted = send(http, agent, "/tool calculator 2+2")
    [action] = wait_for_status(http, accepted["job_id"], "requires_action")["required_action"]["actions"]

    assert decide(http, accepted["job_id"], {"action_id": action["id"], "approved": False,
                                             "note": "not today"}).status_code == 202
    job = wait_for_job(http, accepted["job_id"])

    assert job["status"] == "succeeded"
    assert job["result"]["content"] == "calculator returned: The user refused this tool call: not today"
    assert job["decisions"][0]["decision"] == "rejected"
    assert JobAction.objects.get(public_id=action["id"]).executions == 0  # the tool never ran


def test_an_input_call_waits_for_the_values_a_person_supplies(http, start_worker, user):
    start_worker()
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": "input"})
    accepted = send(http, agent, "/tool calculator")
    [action] = wait_for_status(http, accepted["job_id"], "requires_action")["required_action"]["actions"]
    assert action["type"] == "input"
    assert [field["name"] for field in action["fields"]] == ["expression"]

    missing = decide(http, accepted["job_id"], {"action_id": action["id"], "values": {}})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "invalid_input"
    assert decide(http, accepted["job_id"], {"action_id": action["id"],
                                             "values": {"expression": "5*5"}}).status_code == 202
    job = wait_for_job(http, accepted["job_id"])

    assert job["result"]["content"] == "calculator returned: 25"
    assert job["decisions"][0]["decision"] == "input" and job["decisions"][0]["values"] == {"expression": "5*5"}


def test_a_run_may_pause_several_times_and_continues_on_another_worker(http, start_worker, user):
    first = start_worker(name="first")
    agent = approving_agent(user)
    accepted = send(http, agent, "/tool calculator 1+1; calculator 2+2")
    [one] = wait_for_status(http, accepted["job_id"], "requires_action")["required_action"]["actions"]
    first.stop()  # nothing of the run is left in a process: it is all in PostgreSQL
    start_worker(name="second")

    assert decide(http, accepted["job_id"], {"action_id": one["id"], "approved": True}).status_code == 202
    deadline = time.monotonic() + 30
    while True:
        job = http.get(f"jobs/{accepted['job_id']}/").json()
        if job["status"] == "requires_action" and job["required_action"]["actions"][0]["id"] != one["id"]:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    [two] = job["required_action"]["actions"]
    assert two["arguments"] == {"expression": "2+2"}
    assert decide(http, accepted["job_id"], {"action_id": two["id"], "approved": True}).status_code == 202
    job = wait_for_job(http, accepted["job_id"])

    assert job["status"] == "succeeded"
    assert job["result"]["content"] == "calculator returned: 2\ncalculator returned: 4"
    assert [d["action_id"] for d in job["decisions"]] == [one["id"], two["id"]]
    assert Job.objects.get(public_id=accepted["job_id"]).pauses == 2


def test_an_action_past_its_timeout_ends_the_job_expired_with_its_webhook(http, start_worker, user, settings):
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = True
    start_worker(AGENTOS_ACTION_TIMEOUT="1", AGENTOS_WEBHOOK_ALLOW_PRIVATE="1")
    agent = approving_agent(user)
    with Receiver([200] * 5) as receiver:
        accepted = send(http, agent, "/tool calculator 2+2", callback_url=receiver.url)
        [action] = wait_for_status(http, accepted["job_id"], "requires_action")["required_action"]["actions"]
        time.sleep(1.2)
        jobs_sweep()  # what beat runs every AGENTOS_SWEEP_INTERVAL
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 2:
            assert time.monotonic() < deadline, receiver.requests
            time.sleep(0.05)

    job = http.get(f"jobs/{accepted['job_id']}/").json()
    assert job["status"] == "expired" and job["error"]["code"] == "action_expired"
    assert JobAction.objects.get(public_id=action["id"]).status == "expired"
    assert [json.loads(r["body"])["type"] for r in receiver.requests] == ["job.action_required", "job.expired"]
    late = decide(http, accepted["job_id"], {"action_id": action["id"], "approved": True})
    assert late.status_code == 409 and late.json()["error"]["code"] == "job_finished"


def test_two_decisions_racing_for_one_action_one_wins_the_other_is_409(http, start_worker, user, live_server, token):
    start_worker()
    agent = approving_agent(user)
    accepted = send(http, agent, "/tool calculator 2+2")
    [action] = wait_for_status(http, accepted["job_id"], "requires_action")["required_action"]["actions"]
    barrier = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def racer(approved: bool) -> None:
        with httpx.Client(base_url=f"{live_server.url}/api/v1/agentos/",
                          headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            barrier.wait()
            answers.append(decide(client, accepted["job_id"], {"action_id": action["id"], "approved": approved}))

    racers = [threading.Thread(target=racer, args=(flag,)) for flag in (True, False)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join()

    assert sorted(a.status_code for a in answers) == [202, 409]
    assert [a.json()["error"]["code"] for a in answers if a.status_code == 409] == ["action_already_decided"]
    assert ActionDecision.objects.filter(action__public_id=action["id"]).count() == 1
    assert wait_for_job(http, accepted["job_id"])["status"] == "succeeded"


def test_only_the_owner_decides_and_a_staff_override_is_recorded(http, start_worker, user, live_server):
    start_worker()
    agent = approving_agent(user)
    accepted = send(http, agent, "/tool calculator 2+2")
    [action] = wait_for_status(http, accepted["job_id"], "requires_action")["required_action"]["actions"]
    mallory, admin = make_user("mallory"), make_user("root", is_staff=True)
    url = f"{live_server.url}/api/v1/agentos/jobs/{accepted['job_id']}/"
    body = {"decisions": [{"action_id": action["id"], "approved": True}]}

    as_mallory = {"Authorization": f"Bearer {make_token(mallory)}"}
    assert httpx.get(url, headers=as_mallory).status_code == 404
    refused = httpx.post(url + "actions/", json=body, headers=as_mallory)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "job_not_found"
    assert JobAction.objects.get(public_id=action["id"]).status == "pending"

    overridden = httpx.post(url + "actions/", json=body, headers={"Authorization": f"Bearer {make_token(admin)}"})
    assert overridden.status_code == 202
    [decision] = wait_for_job(http, accepted["job_id"])["decisions"]
    assert decision["decided_by"] == "root" and decision["staff_override"] is True


def test_a_paused_job_can_be_cancelled(http, start_worker, user):
    start_worker()
    agent = approving_agent(user)
    accepted = send(http, agent, "/tool calculator 2+2")
    [action] = wait_for_status(http, accepted["job_id"], "requires_action")["required_action"]["actions"]

    cancelled = http.post(f"jobs/{accepted['job_id']}/cancel/")

    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert JobAction.objects.get(public_id=action["id"]).status == "cancelled"
    late = decide(http, accepted["job_id"], {"action_id": action["id"], "approved": True})
    assert late.status_code == 409 and late.json()["error"]["code"] == "job_finished"


def test_a_paused_job_keeps_its_place_in_the_session(http, start_worker, user):
    start_worker()
    agent = approving_agent(user)
    first = send(http, agent, "/tool calculator 2+2")
    [action] = wait_for_status(http, first["job_id"], "requires_action")["required_action"]["actions"]

    second = send(http, agent, "and then?", session_id=first["session_id"])
    rejected = http.post("send-message/", json={"agent_id": agent.public_id, "message": "now!",
                                                "session_id": first["session_id"], "multitask": "reject"})
    time.sleep(1)
    assert http.get(f"jobs/{second['job_id']}/").json()["status"] == "queued"  # behind the paused one
    assert rejected.status_code == 409 and rejected.json()["error"]["code"] == "session_busy"

    assert decide(http, first["job_id"], {"action_id": action["id"], "approved": True}).status_code == 202
    assert wait_for_job(http, first["job_id"])["result"]["content"] == "calculator returned: 4"
    assert wait_for_job(http, second["job_id"])["result"]["content"] == "Echo #2: and then?"
    transcript = http.get(f"sessions/{first['session_id']}/").json()["messages"]
    assert [m["content"] for m in transcript] == ["/tool calculator 2+2", "calculator returned: 4",
                                                  "and then?", "Echo #2: and then?"]


def test_interrupt_cancels_a_paused_job(http, start_worker, user):
    start_worker()
    agent = approving_agent(user)
    first = send(http, agent, "/tool calculator 2+2")
    wait_for_status(http, first["job_id"], "requires_action")

    second = send(http, agent, "forget it", session_id=first["session_id"], multitask="interrupt")

    assert http.get(f"jobs/{first['job_id']}/").json()["status"] == "cancelled"
    assert wait_for_job(http, second["job_id"])["status"] == "succeeded"


def test_a_worker_killed_after_the_decision_runs_the_tool_once_with_one_reply(http, start_worker, user, settings):
    settings.AGENTOS_LEASE_SECONDS = 2
    doomed = start_worker(name="doomed", AGENTOS_LEASE_SECONDS="2")
    agent = approving_agent(user, model_options={"latency_ms": 3000})  # the model's turn after the tool is slow
    accepted = send(http, agent, "/tool calculator 2+2")
    [action] = wait_for_status(http, accepted["job_id"], "requires_action", timeout=20)["required_action"]["actions"]
    assert decide(http, accepted["job_id"], {"action_id": action["id"], "approved": True}).status_code == 202
    deadline = time.monotonic() + 20
    while JobAction.objects.get(public_id=action["id"]).run_result is None:  # the tool ran: the model is thinking
        assert time.monotonic() < deadline, "the approved tool never ran"
        time.sleep(0.05)

    doomed.kill()  # SIGKILL: the run is lost mid-way; its lease stops being renewed
    start_worker(name="rescuer", AGENTOS_LEASE_SECONDS="2")
    deadline = time.monotonic() + 60
    while not Job.objects.get(public_id=accepted["job_id"]).is_terminal:
        assert time.monotonic() < deadline
        jobs_sweep()
        time.sleep(0.5)

    job = http.get(f"jobs/{accepted['job_id']}/").json()
    assert job["status"] == "succeeded" and job["result"]["content"] == "calculator returned: 4"
    assert JobAction.objects.get(public_id=action["id"]).executions == 1
    assert ChatMessage.objects.filter(job__public_id=accepted["job_id"], role="assistant").count() == 1
    assert Job.objects.get(public_id=accepted["job_id"]).attempts == 2  # the continue, then the rescue


def test_the_stream_shows_the_pause_the_decision_and_the_end(http, start_worker, user):
    start_worker()
    agent = approving_agent(user)
    accepted = send(http, agent, "/tool calculator 2+2")
    seen: list[str] = []
    with http.stream("GET", f"jobs/{accepted['job_id']}/events/", timeout=30) as stream:
        for line in stream.iter_lines():
            if not line.startswith("event: "):
                continue
            seen.append(line[7:])
            if seen[-1] == "job.action_required":
                [action] = http.get(f"jobs/{accepted['job_id']}/").json()["required_action"]["actions"]
                decided = decide(http, accepted["job_id"], {"action_id": action["id"], "approved": True})
                assert decided.status_code == 202
            if seen[-1] == "job.succeeded":
                break

    statuses = [kind for kind in seen if kind.startswith("job.")]
    assert statuses == ["job.queued", "job.running", "job.action_required", "job.queued", "job.running",
                        "job.succeeded"]
    assert seen.index("tool_call.completed") > seen.index("job.action_required")
