"""Tool policies and decisions over the REST API: shapes, errors, audit, idempotency.

The paused runs here are made by running the worker's job body in this
process (workers.execution), against the real database; tests/test_paused_runs.py
runs them through real worker processes."""
from __future__ import annotations

from typing import Any

import pytest

from apps.agents.models import Agent
from apps.jobs.actions import action_run_finish, action_run_start
from apps.jobs.models import ActionDecision, Job, JobAction, RunPause
from apps.jobs.services import message_send
from tests.factories import make_agent
from workers.execution import execute_message_job
from workers.paused import INTERRUPTED, GatedCalls

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agentos/agents/"


def paused_job(user: Any, message: str = "/tool calculator 2+2", policy: str = "approve") -> Job:
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": policy})
    job = message_send(user=user, agent=agent, message=message)
    assert execute_message_job(job.pk) == "paused"
    return Job.objects.get(pk=job.pk)


def post_decisions(api: Any, job: Job, decisions: Any, **headers: str) -> Any:
    return api.post(f"/api/v1/agentos/jobs/{job.public_id}/actions/", {"decisions": decisions},
                    content_type="application/json", **headers)


def error_code(response: Any) -> str:
    return response.json()["error"]["code"]


def test_tool_policies_are_set_on_create_and_patch_and_bump_the_version(api):
    created = api.post(AGENTS, {"name": "Pays", "tools": ["calculator", "current_time"],
                                "tool_policies": {"calculator": "approve"}}, content_type="application/json")
    assert created.status_code == 201, created.json()
    assert created.json()["tool_policies"] == {"calculator": "approve"}

    patched = api.patch(f"{AGENTS}{created.json()['id']}/", {"tool_policies": {"current_time": "input"}},
                        content_type="application/json")

    assert patched.status_code == 200
    assert patched.json()["tool_policies"] == {"current_time": "input"}
    assert patched.json()["version"] == created.json()["version"] + 1
    assert api.get(f"{AGENTS}{created.json()['id']}/").json()["tool_policies"] == {"current_time": "input"}


@pytest.mark.parametrize("policies, code", [
    ({"calculator": "sometimes"}, "invalid_tool_policies"),
    ({"rm_rf": "approve"}, "unknown_tool"),
    ({"calculator": 1}, "invalid_tool_policies"),
])
def test_a_bad_tool_policy_is_a_400_and_writes_nothing(api, user, policies, code):
    agent = make_agent(user)

    created = api.post(AGENTS, {"name": "X", "tool_policies": policies}, content_type="application/json")
    patched = api.patch(f"{AGENTS}{agent.public_id}/", {"tool_policies": policies}, content_type="application/json")

    assert created.status_code == 400 and error_code(created) in (code, "invalid_input")
    assert patched.status_code == 400 and error_code(patched) in (code, "invalid_input")
    assert Agent.objects.filter(name="X").count() == 0
    assert Agent.objects.get(pk=agent.pk).version == agent.version


def test_a_tool_left_auto_runs_at_once(user):
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": "auto"})
    job = message_send(user=user, agent=agent, message="/tool calculator 6*7")

    assert execute_message_job(job.pk) == "succeeded"
    assert Job.objects.get(pk=job.pk).result["content"] == "calculator returned: 42"


def test_a_paused_job_shows_its_required_action_and_a_job_that_never_paused_shows_none(api, user, agent):
    job = paused_job(user)
    plain = message_send(user=user, agent=agent, message="hi")

    body = api.get(f"/api/v1/agentos/jobs/{job.public_id}/").json()
    [action] = body["required_action"]["actions"]

    assert body["status"] == "requires_action"
    assert set(action) == {"id", "type", "tool", "arguments"}  # no `fields`: it is no input action
    assert (action["type"], action["tool"], action["arguments"]) == ("approve", "calculator", {"expression": "2+2"})
    assert body["required_action"]["expires_at"] <= job.deadline_at.isoformat()  # never past the deadline
    assert body["decisions"] == []
    assert api.get(f"/api/v1/agentos/jobs/{plain.public_id}/").json()["required_action"] is None
    listed = api.get("/api/v1/agentos/jobs/?status=requires_action").json()["jobs"]
    assert [j["job_id"] for j in listed] == [job.public_id]


@pytest.mark.parametrize("decisions", [
    [],
    "yes",
    [{"approved": True}],
    [{"action_id": "ACTION", "approved": "yes"}],
    [{"action_id": "ACTION", "approved": True, "values": {}}],
    [{"action_id": "ACTION"}],
    [{"action_id": "ACTION", "approved": False, "arguments": {"expression": "1"}}],
    [{"action_id": "ACTION", "approved": True, "arguments": "1+1"}],
    [{"action_id": "ACTION", "approved": True, "note": 5}],
    [{"action_id": "ACTION", "approved": True, "colour": "red"}],
    [{"action_id": "ACTION", "values": {"expression": "1"}}],  # an approve action takes no values
    [{"action_id": "ACTION", "approved": True}, {"action_id": "ACTION", "approved": False}],
])
def test_a_malformed_decision_is_a_400_and_decides_nothing(api, user, decisions):
    job = paused_job(user)
    action = JobAction.objects.get(job=job)
    if isinstance(decisions, list):
        decisions = [{**d, "action_id": action.public_id} if d.get("action_id") == "ACTION" else d
                     for d in decisions]

    response = post_decisions(api, job, decisions)

    assert response.status_code == 400, response.json()
    assert error_code(response) == "invalid_input"
    assert JobAction.objects.get(pk=action.pk).status == "pending"
    assert not ActionDecision.objects.exists()
    assert Job.objects.get(pk=job.pk).status == "requires_action"


def test_an_unknown_action_is_a_404_and_a_body_that_is_no_object_a_400(api, user):
    job = paused_job(user)

    unknown = post_decisions(api, job, [{"action_id": "act-000000000000", "approved": True}])
    not_object = api.post(f"/api/v1/agentos/jobs/{job.public_id}/actions/", [1, 2],
                          content_type="application/json")

    assert unknown.status_code == 404 and error_code(unknown) == "action_not_found"
    assert not_object.status_code == 400


def test_a_decision_answers_202_with_the_queued_job_and_its_audit(api, user):
    job = paused_job(user)
    action = JobAction.objects.get(job=job)

    response = post_decisions(api, job, [{"action_id": action.public_id, "approved": True, "note": "ok"}])

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["required_action"] is None
    [decision] = body["decisions"]
    assert decision["action_id"] == action.public_id and decision["decision"] == "approved"
    assert decision["decided_by"] == "alice" and decision["note"] == "ok"
    assert decision["arguments_before"] == decision["arguments_after"] == {"expression": "2+2"}
    assert RunPause.objects.get(job=job).resumed_at is not None
    again = post_decisions(api, job, [{"action_id": action.public_id, "approved": False}])
    assert again.status_code == 409 and error_code(again) == "action_already_decided"


def test_the_idempotency_key_replays_the_first_answer(api, user):
    job = paused_job(user)
    action = JobAction.objects.get(job=job)
    decision = [{"action_id": action.public_id, "approved": True}]

    first = post_decisions(api, job, decision, HTTP_IDEMPOTENCY_KEY="decide-1")
    again = post_decisions(api, job, decision, HTTP_IDEMPOTENCY_KEY="decide-1")

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert ActionDecision.objects.count() == 1


def test_a_decision_on_another_users_job_is_a_404(other_api, user):
    job = paused_job(user)
    action = JobAction.objects.get(job=job)

    response = post_decisions(other_api, job, [{"action_id": action.public_id, "approved": True}])

    assert response.status_code == 404 and error_code(response) == "job_not_found"
    assert JobAction.objects.get(pk=action.pk).status == "pending"


def test_an_approved_call_runs_at_most_once_however_often_the_run_continues(user):
    job = paused_job(user)
    action = JobAction.objects.get(job=job)

    assert action_run_start(action_id=action.public_id) == ("run", None)
    # the worker died during the call: a later continue says so instead of calling again
    assert action_run_start(action_id=action.public_id) == ("interrupted", None)
    calls: list[int] = []
    assert GatedCalls.run(action.public_id, lambda: calls.append(1)) == INTERRUPTED
    action_run_finish(action_id=action.public_id, result="4")
    assert action_run_start(action_id=action.public_id) == ("done", "4")
    assert GatedCalls.run(action.public_id, lambda: calls.append(1)) == "4"
    assert calls == [] and JobAction.objects.get(pk=action.pk).executions == 1


def test_the_paused_run_continues_in_process_too_and_writes_one_reply(api, user):
    job = paused_job(user)
    action = JobAction.objects.get(job=job)
    post_decisions(api, job, [{"action_id": action.public_id, "approved": True}])

    assert execute_message_job(job.pk) == "succeeded"
    assert execute_message_job(job.pk) == "skipped"  # a duplicate delivery of the task writes nothing
    finished = Job.objects.get(pk=job.pk)
    assert finished.result["content"] == "calculator returned: 4"
    assert finished.messages.filter(role="assistant").count() == 1
